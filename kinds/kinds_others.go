//go:build !linux

package kinds

import (
	"net"
	"syscall"

	"github.com/fdpass/fdpass/fd"
	"github.com/vishvananda/netns"
)

const (
	afInet        = syscall.AF_INET
	afInet6       = syscall.AF_INET6
	sIFSOCK       = syscall.S_IFSOCK
	sockStream    = syscall.SOCK_STREAM
	sockDgram     = syscall.SOCK_DGRAM
	ipprotoTCP    = syscall.IPPROTO_TCP
	ipprotoUDP    = syscall.IPPROTO_UDP
	sockSeqpacket = syscall.SOCK_SEQPACKET
)

func detect(int) (Info, error) { return Info{}, ErrUnsupported }
func verify(int, Kind) error   { return ErrUnsupported }

// SocketNetNS is Linux-only; elsewhere it returns ErrUnsupported.
func SocketNetNS(int) (fd.ID, error) { return fd.ID{}, ErrUnsupported }

// SocketNetNSHandle is Linux-only; elsewhere it returns ErrUnsupported.
func SocketNetNSHandle(int) (netns.NsHandle, error) { return netns.None(), ErrUnsupported }

// CurrentNetNS is Linux-only; elsewhere it returns ErrUnsupported.
func CurrentNetNS() (fd.ID, error) { return fd.ID{}, ErrUnsupported }

func verifyAll([]int, []Kind) (int, error) { return 0, ErrUnsupported }

// InNetNS is Linux-only; elsewhere it returns ErrUnsupported.
func InNetNS(netns.NsHandle, func() error) error { return ErrUnsupported }

// ListenInNetNS is Linux-only; elsewhere it returns ErrUnsupported.
func ListenInNetNS(netns.NsHandle, string, string) (net.Listener, error) { return nil, ErrUnsupported }

// ListenPacketInNetNS is Linux-only; elsewhere it returns ErrUnsupported.
func ListenPacketInNetNS(netns.NsHandle, string, string) (net.PacketConn, error) {
	return nil, ErrUnsupported
}

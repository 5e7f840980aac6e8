//go:build !linux

package kinds

import (
	"net"

	"github.com/fdpass/fdpass/fd"
	"github.com/vishvananda/netns"
)

// SocketNetNS is Linux-only; elsewhere it returns ErrUnsupported.
func SocketNetNS(int) (fd.ID, error) { return fd.ID{}, ErrUnsupported }

// SocketNetNSHandle is Linux-only; elsewhere it returns ErrUnsupported.
func SocketNetNSHandle(int) (netns.NsHandle, error) { return netns.None(), ErrUnsupported }

// CurrentNetNS is Linux-only; elsewhere it returns ErrUnsupported.
func CurrentNetNS() (fd.ID, error) { return fd.ID{}, ErrUnsupported }

// InNetNS is Linux-only; elsewhere it returns ErrUnsupported.
func InNetNS(netns.NsHandle, func() error) error { return ErrUnsupported }

// ListenInNetNS is Linux-only; elsewhere it returns ErrUnsupported.
func ListenInNetNS(netns.NsHandle, string, string) (net.Listener, error) { return nil, ErrUnsupported }

// ListenPacketInNetNS is Linux-only; elsewhere it returns ErrUnsupported.
func ListenPacketInNetNS(netns.NsHandle, string, string) (net.PacketConn, error) {
	return nil, ErrUnsupported
}

//go:build !linux

package kinds

import "syscall"

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

func detect(int) (Info, error)             { return Info{}, ErrUnsupported }
func verify(int, Kind) error               { return ErrUnsupported }
func verifyAll([]int, []Kind) (int, error) { return 0, ErrUnsupported }

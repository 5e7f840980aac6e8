//go:build linux

// Package rawsock wraps sendmsg(2) and recvmsg(2) without the allocations of
// the x/sys wrappers (which build a Sockaddr for every received message).
// The benchmarks use it for the raw baseline too, so that the baseline and
// the library pay the same price per system call.
package rawsock

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Recvmsg wraps recvmsg(2) on a connected socket: no source address.
func Recvmsg(fd int, p, oob []byte, flags int) (n, oobn, recvflags int, err error) {
	var msg unix.Msghdr
	var iov unix.Iovec
	if len(p) > 0 {
		iov.Base = &p[0]
		iov.SetLen(len(p))
		msg.Iov = &iov
		msg.SetIovlen(1)
	}
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	if e != 0 {
		return 0, 0, 0, e
	}
	return int(r), int(msg.Controllen), int(msg.Flags), nil
}

// Sendmsg wraps sendmsg(2) on a connected socket.
func Sendmsg(fd int, p, oob []byte, flags int) (int, error) {
	return Sendmsg2(fd, p, nil, oob, flags)
}

// Sendmsg2 is Sendmsg with the data in two pieces, p then q (two iovecs):
// one message, without copying them together first.
func Sendmsg2(fd int, p, q, oob []byte, flags int) (int, error) {
	var msg unix.Msghdr
	var iov [2]unix.Iovec
	n := 0
	for _, b := range [2][]byte{p, q} {
		if len(b) > 0 {
			iov[n].Base = &b[0]
			iov[n].SetLen(len(b))
			n++
		}
	}
	if n > 0 {
		msg.Iov = &iov[0]
		msg.SetIovlen(n)
	}
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	r, _, e := unix.Syscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

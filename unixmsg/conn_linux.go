//go:build linux

package unixmsg

import (
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/internal/fdtable"
	"github.com/fdpass/fdpass/internal/rawsock"
	"github.com/fdpass/fdpass/unixmsg/wire"
	"golang.org/x/sys/unix"
)

func socketType(rc syscall.RawConn) (int, error) {
	var typ int
	var serr error
	err := rc.Control(func(s uintptr) {
		typ, serr = unix.GetsockoptInt(int(s), unix.SOL_SOCKET, unix.SO_TYPE)
	})
	if err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, os.NewSyscallError("getsockopt", serr)
	}
	return typ, nil
}

func socketPair() (*net.UnixConn, *net.UnixConn, error) {
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	a, err := fileUnixConn(p[0])
	if err != nil {
		unix.Close(p[1])
		return nil, nil, err
	}
	b, err := fileUnixConn(p[1])
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// fileUnixConn takes ownership of the socket s.
func fileUnixConn(s int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(s), "unixmsg")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}

// recvOnce wraps one recvmsg(2) with MSG_CMSG_CLOEXEC. It returns the
// descriptors that came with the data; on error it has closed them.
func (c *Conn) recvOnce() (n int, fds []int, eof bool, err error) {
	var oobn, flags int
	var rerr error
	err = c.rc.Read(func(s uintptr) bool {
		for {
			n, oobn, flags, rerr = rawsock.Recvmsg(int(s), c.rbuf, c.oob, unix.MSG_CMSG_CLOEXEC)
			if rerr == unix.EINTR {
				continue
			}
			return rerr != unix.EAGAIN
		}
	})
	if err == nil && rerr != nil {
		err = os.NewSyscallError("recvmsg", rerr)
	}
	if err != nil {
		return 0, nil, false, err
	}
	fds, cerr := wire.ParseControl(c.oob[:oobn])
	switch {
	case flags&unix.MSG_CTRUNC != 0:
		cerr = errf(ErrControlTruncated, "%d descriptors arrived, the rest were dropped by the kernel", len(fds))
	case c.messages && flags&unix.MSG_TRUNC != 0:
		cerr = errf(ErrTruncated, "message longer than %d bytes", len(c.rbuf))
	}
	if cerr != nil {
		fd.CloseAll(fds)
		return 0, nil, false, cerr
	}
	if n == 0 && len(fds) == 0 {
		if c.messages && !c.peerGone() {
			// recvmsg(2) returns 0 both for an empty message and at the
			// end; only the peer's shutdown tells them apart.
			return 0, nil, false, errf(ErrMalformed, "empty message")
		}
		return 0, nil, true, nil
	}
	return n, fds, false, nil
}

// reserveFDs makes room in the descriptor table for n descriptors.
func (c *Conn) reserveFDs(n int) {
	c.rc.Control(func(s uintptr) { fdtable.Reserve(int(s), n) })
}

// peerGone reports whether the peer has shut the connection down.
func (c *Conn) peerGone() bool {
	gone := true
	c.rc.Control(func(s uintptr) {
		p := []unix.PollFd{{Fd: int32(s), Events: unix.POLLRDHUP}}
		if n, err := unix.Poll(p, 0); err == nil && n == 1 {
			gone = p[0].Revents&(unix.POLLRDHUP|unix.POLLHUP) != 0
		} else if err == nil {
			gone = false
		}
	})
	return gone
}

// writeFrame wraps sendmsg(2): one frame, hdr then body (either may be
// empty), whose first bytes carry fds; on a stream socket a short write
// is continued.
func (c *Conn) writeFrame(hdr, body []byte, fds []int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	var werr error
	err := c.rc.Write(func(s uintptr) bool {
		for {
			n, err := rawsock.Sendmsg2(int(s), hdr, body, oob, unix.MSG_NOSIGNAL)
			switch err {
			case nil:
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			default:
				werr = os.NewSyscallError("sendmsg", err)
				return true
			}
			oob = nil
			if k := min(n, len(hdr)); k > 0 {
				hdr, n = hdr[k:], n-k
			}
			body = body[n:]
			if len(hdr) == 0 && len(body) == 0 {
				return true
			}
		}
	})
	if err != nil {
		return err
	}
	return werr
}

// tryWrite sends p if the socket takes it now, and otherwise drops it.
func (c *Conn) tryWrite(p []byte) {
	c.rc.Write(func(s uintptr) bool {
		rawsock.Sendmsg(int(s), p, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
		return true
	})
}

// soAcceptCon is __SO_ACCEPTCON in include/linux/net.h: the flag of a
// listening socket in /proc/net/unix.
const soAcceptCon = 1 << 16

// socketTypeAt returns the type of the unix socket listening at addr (a
// path, or an abstract name starting with @), as /proc/net/unix lists the
// sockets of the caller's network namespace. ok is false when it lists
// none there: a socket of another namespace, or a path given otherwise
// than it was bound.
func socketTypeAt(addr string) (typ int, ok bool) {
	data, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return 0, false
	}
	// Num RefCount Protocol Flags Type St Inode Path
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) < 8 || strings.Join(f[7:], " ") != addr {
			continue
		}
		flags, ferr := strconv.ParseUint(f[3], 16, 32)
		t, terr := strconv.ParseUint(f[4], 16, 16)
		if ferr != nil || terr != nil {
			continue
		}
		typ, ok = int(t), true
		if flags&soAcceptCon != 0 {
			break // the listening socket itself
		}
	}
	return typ, ok
}

//go:build linux

package migrate

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/fdpass/fdpass/kinds"
	"golang.org/x/sys/unix"
)

// fileConn is a connected stream socket as a net.Conn on an *os.File: reads,
// writes, deadlines and SyscallConn are the file's. Its addresses are
// looked up on first use.
type fileConn struct {
	*os.File
	kind         kinds.Kind
	once         sync.Once
	laddr, raddr net.Addr
}

// DescriptorKind says what the socket is (kinds.Kinded), so that handing
// it on costs no system call to find out.
func (c *fileConn) DescriptorKind() kinds.Kind { return c.kind }

// Read, Write and Close return errors as net's connections do: a
// *net.OpError, which net/http (among others) asserts to net.Error to tell
// the timeout of its own aborted background read from a broken
// connection. os.File's *os.PathError is no net.Error: net/http would take
// that timeout for a failure and cancel the connection's context, under
// every later request of it. io.EOF stays as it is.
func (c *fileConn) Read(b []byte) (int, error) {
	n, err := c.File.Read(b)
	return n, c.opError("read", err)
}

func (c *fileConn) Write(b []byte) (int, error) {
	n, err := c.File.Write(b)
	return n, c.opError("write", err)
}

func (c *fileConn) Close() error { return c.opError("close", c.File.Close()) }

// CloseWrite and CloseRead shut down one side of the connection, as
// *net.TCPConn's do: net/http sends its FIN with CloseWrite before it
// closes a connection it ends, so that the client reads the last answer
// rather than a reset.
func (c *fileConn) CloseWrite() error { return c.shutdown("close", unix.SHUT_WR) }
func (c *fileConn) CloseRead() error  { return c.shutdown("close", unix.SHUT_RD) }

func (c *fileConn) shutdown(op string, how int) error {
	rc, err := c.File.SyscallConn()
	if err != nil {
		return c.opError(op, err)
	}
	var serr error
	if err := rc.Control(func(s uintptr) { serr = unix.Shutdown(int(s), how) }); err != nil {
		return c.opError(op, err)
	}
	if serr != nil {
		return c.opError(op, os.NewSyscallError("shutdown", serr))
	}
	return nil
}

// opError turns an error of the file into the one net's connections give.
func (c *fileConn) opError(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	if errors.Is(err, os.ErrClosed) {
		err = net.ErrClosed
	}
	network := "tcp"
	if c.kind == kinds.UnixConn {
		network = "unix"
	}
	return &net.OpError{Op: op, Net: network, Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

func (c *fileConn) LocalAddr() net.Addr  { c.addrs(); return c.laddr }
func (c *fileConn) RemoteAddr() net.Addr { c.addrs(); return c.raddr }

func (c *fileConn) addrs() {
	c.once.Do(func() {
		var la, ra unix.Sockaddr
		if rc, err := c.File.SyscallConn(); err == nil {
			rc.Control(func(s uintptr) {
				la, _ = unix.Getsockname(int(s))
				ra, _ = unix.Getpeername(int(s))
			})
		}
		c.laddr, c.raddr = c.addr(la), c.addr(ra)
	})
}

func (c *fileConn) addr(sa unix.Sockaddr) net.Addr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(append([]byte(nil), sa.Addr[:]...)), Port: sa.Port}
	case *unix.SockaddrInet6:
		a := &net.TCPAddr{IP: net.IP(append([]byte(nil), sa.Addr[:]...)), Port: sa.Port}
		if sa.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				a.Zone = ifi.Name
			}
		}
		return a
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Name: sa.Name, Net: "unix"}
	}
	if c.kind == kinds.UnixConn {
		return &net.UnixAddr{Net: "unix"}
	}
	return &net.TCPAddr{}
}

// connSlot is the memory of one adopted connection: the Conn and the
// fileConn inside it.
type connSlot struct {
	c  Conn
	fc fileConn
}

// adopt takes ownership of fd, a connected stream socket of kind k
// received in a CONNS batch, and returns it as a net.Conn, in s's memory
// when it can.
//
// kinds.ToConn goes through os.NewFile and net.FileConn, which duplicates
// the descriptor, registers both with the poller and closes one: about
// five times the cost of this, which matters with 10,000 connections. The
// socket is non-blocking already (the predecessor's runtime made it so,
// and the flag belongs to the socket), so os.NewFile gives a pollable file
// with deadlines; a socket that is not (the file refuses a deadline, which
// costs no system call to ask) goes the long way.
func (s *connSlot) adopt(fd int, k kinds.Kind) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "conn")
	if f.SetDeadline(time.Time{}) == nil {
		s.fc.File, s.fc.kind = f, k
		return &s.fc, nil
	}
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("%w: net.Conn: %w", kinds.ErrConvert, err)
	}
	return c, nil
}

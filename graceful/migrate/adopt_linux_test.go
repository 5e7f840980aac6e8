//go:build linux

package migrate

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/fdpass/fdpass/internal/fdtest"
	"github.com/fdpass/fdpass/kinds"
	"golang.org/x/sys/unix"
)

// streamConn converts fd as Receive does, for a test.
func streamConn(fd int, k kinds.Kind) (net.Conn, error) { return new(connSlot).adopt(fd, k) }

// adoptedPair returns one end of a unix stream socket pair, made with
// flags, converted as Receive does, and the other end's descriptor, closed
// at the end of the test.
func adoptedPair(t *testing.T, flags int) (net.Conn, int) {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|flags, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(sp[1]) })
	c, err := streamConn(sp[0], kinds.UnixConn)
	if err != nil {
		unix.Close(sp[0])
		t.Fatal(err)
	}
	return c, sp[1]
}

// TestStreamConn converts received stream sockets: a non-blocking one
// becomes a fileConn on the poller, a blocking one goes through
// net.FileConn; both carry bytes both ways and honour deadlines, and
// nothing leaks.
func TestStreamConn(t *testing.T) {
	for _, tc := range []struct {
		name     string
		flags    int
		fileConn bool
	}{
		{"nonblocking", unix.SOCK_NONBLOCK, true},
		{"blocking", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fdtest.CheckLeaks(t)
			c, peer := adoptedPair(t, tc.flags)
			defer c.Close()
			if _, ok := c.(*fileConn); ok != tc.fileConn {
				t.Errorf("streamConn gave a %T", c)
			}
			if _, err := unix.Write(peer, []byte("ping")); err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("read %q, %v", buf, err)
			}
			if _, err := c.Write([]byte("pong")); err != nil {
				t.Fatal(err)
			}
			if n, err := unix.Read(peer, buf); err != nil || string(buf[:n]) != "pong" {
				t.Fatalf("peer read %q, %v", buf[:n], err)
			}
			// Nothing to read: the deadline ends the wait, with an error
			// that is a net.Error itself, as net/http asserts it to be
			// (else it cancels the connection's context).
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			_, err := c.Read(buf)
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("read past the deadline: %v (%T), want a net.Error that is a timeout", err, err)
			}
			c.SetReadDeadline(time.Time{})
			// CloseWrite sends the end, as a *net.TCPConn's does (net/http
			// uses it before closing a connection).
			cw, ok := c.(interface{ CloseWrite() error })
			if !ok {
				t.Fatalf("%T has no CloseWrite", c)
			}
			if err := cw.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			unix.SetNonblock(peer, false)
			if n, err := unix.Read(peer, buf); n != 0 || err != nil {
				t.Errorf("peer read after CloseWrite: %d, %v; want the end", n, err)
			}
			// The peer's end is io.EOF, as is.
			unix.Shutdown(peer, unix.SHUT_WR)
			if n, err := c.Read(buf); n != 0 || err != io.EOF {
				t.Errorf("read at the end: %d, %v; want io.EOF", n, err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
				t.Errorf("write after Close: %v, want net.ErrClosed", err)
			}
			if err := c.Close(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("second Close: %v, want net.ErrClosed", err)
			}
		})
	}
}

// TestCloseWhileOffered: the application closes a connection (from
// another goroutine) while its reader waits in Handoff. The close takes
// effect when the migration is decided: the reader returns from Handoff,
// the peer sees the end, and nothing leaks or hangs.
func TestCloseWhileOffered(t *testing.T) {
	for _, migrated := range []bool{false, true} {
		t.Run(map[bool]string{false: "resumed", true: "migrated"}[migrated], func(t *testing.T) {
			fdtest.CheckLeaks(t)
			nc, peer := adoptedPair(t, unix.SOCK_NONBLOCK)
			tr := new(Tracker)
			c := tr.Track(nc, nil)
			handedOff := make(chan bool, 1)
			go func() {
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if errors.Is(err, ErrMigrating) {
						handedOff <- c.HandoffReader([]byte("state"), r, []byte(line))
						return
					}
					if err != nil {
						handedOff <- false
						return
					}
				}
			}()
			conns := tr.quiesce(5*time.Second, logger(nil))
			if len(conns) != 1 {
				t.Fatalf("quiesce gave %d connections", len(conns))
			}
			closed := make(chan error, 1)
			go func() { closed <- c.Close() }()
			select {
			case err := <-closed:
				if err != nil {
					t.Errorf("Close while offered: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Close while offered blocked")
			}
			out := &Outgoing{conns: conns}
			if migrated {
				out.Commit()
			} else {
				out.Resume()
			}
			select {
			case got := <-handedOff:
				if got != migrated {
					t.Errorf("Handoff = %v, want %v", got, migrated)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("reader still waits in Handoff")
			}
			unix.SetNonblock(peer, false)
			if n, err := unix.Read(peer, make([]byte, 8)); n != 0 || err != nil {
				t.Errorf("peer read %d, %v; want the end of the stream", n, err)
			}
			if _, err := c.Write([]byte("x")); err == nil {
				t.Error("Write after Close succeeded")
			}
		})
	}
}

// TestTrackedCloseWrite: a tracked connection half-closes as the connection
// inside does (net/http sends its FIN so), and not once it is closed.
func TestTrackedCloseWrite(t *testing.T) {
	fdtest.CheckLeaks(t)
	nc, peer := adoptedPair(t, unix.SOCK_NONBLOCK)
	c := new(Tracker).Track(nc, nil)
	if _, err := c.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	unix.SetNonblock(peer, false)
	buf := make([]byte, 8)
	if n, err := unix.Read(peer, buf); err != nil || string(buf[:n]) != "last" {
		t.Fatalf("peer read %q, %v", buf[:n], err)
	}
	if n, err := unix.Read(peer, buf); n != 0 || err != nil {
		t.Errorf("peer read after CloseWrite: %d, %v; want the end", n, err)
	}
	// The other way still works.
	if _, err := unix.Write(peer, []byte("more")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf[:4]); err != nil || string(buf[:4]) != "more" {
		t.Fatalf("read after CloseWrite: %q, %v", buf[:4], err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("CloseWrite after Close: %v, want net.ErrClosed", err)
	}
}

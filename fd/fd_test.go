package fd_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/internal/childtest"
	"github.com/fdpass/fdpass/internal/fdtest"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { childtest.Main(m) }

func checkLeaks(t testing.TB) {
	t.Helper()
	fdtest.CheckLeaks(t)
}

func mustCount(t testing.TB) int {
	t.Helper()
	n, err := fd.Count()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// rawFD runs f on the descriptor behind v without duplicating it.
func rawFD(t testing.TB, v any, f func(fd int)) {
	t.Helper()
	rc, err := v.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Control(func(fd uintptr) { f(int(fd)) }); err != nil {
		t.Fatal(err)
	}
}

func statusFlags(t testing.TB, v any) int {
	t.Helper()
	var fl int
	var ferr error
	rawFD(t, v, func(fd int) { fl, ferr = unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0) })
	if ferr != nil {
		t.Fatal(ferr)
	}
	return fl
}

func closeOnExec(t testing.TB, fd int) bool {
	t.Helper()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fl&unix.FD_CLOEXEC != 0
}

// isOpen reports whether the raw descriptor n is open.
func isOpen(n int) bool {
	_, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0)
	return err == nil
}

func closeAtEnd(t testing.TB, c io.Closer) {
	t.Cleanup(func() { c.Close() })
}

const ioTimeout = 5 * time.Second

// endpoint is one end of something the tests duplicate: the original value,
// a proof that a value of its kind works, and a way to make a Go value of
// the same kind from a duplicate.
type endpoint struct {
	orig io.Closer
	// works fails t unless v (the original or an adopted duplicate) does
	// its job: accepts a dialed connection, reads what the peer wrote, ...
	works func(t *testing.T, v any)
	// adopt turns a file holding a duplicate into a Go value of the same
	// kind; the file stays the caller's.
	adopt func(f *os.File) (io.Closer, error)
}

func listenerAdopt(f *os.File) (io.Closer, error) { return net.FileListener(f) }
func connAdopt(f *os.File) (io.Closer, error)     { return net.FileConn(f) }

func fileAdopt(f *os.File) (io.Closer, error) {
	// The caller closes f, so the adopted file needs a descriptor of its
	// own. Not f.Fd(): that would switch the pipe to blocking mode.
	nfd, err := fd.Dup(f)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}

func tcpListenerEndpoint(t *testing.T) endpoint {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, ln)
	addr := ln.Addr().String()
	return endpoint{
		orig: ln,
		works: func(t *testing.T, v any) {
			t.Helper()
			l := v.(*net.TCPListener)
			l.SetDeadline(time.Now().Add(ioTimeout))
			c, err := net.DialTimeout("tcp", addr, ioTimeout)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s, err := l.Accept()
			if err != nil {
				t.Fatalf("accept: %v", err)
			}
			s.Close()
		},
		adopt: listenerAdopt,
	}
}

// streamWorks checks that v, a net.Conn, reads what peer writes and peer
// reads what v writes.
func streamWorks(peer net.Conn) func(t *testing.T, v any) {
	return func(t *testing.T, v any) {
		t.Helper()
		c := v.(net.Conn)
		c.SetDeadline(time.Now().Add(ioTimeout))
		peer.SetDeadline(time.Now().Add(ioTimeout))
		if _, err := peer.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("read %q, %v; want ping", buf, err)
		}
		if _, err := c.Write([]byte("pong")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, buf); err != nil || string(buf) != "pong" {
			t.Fatalf("peer read %q, %v; want pong", buf, err)
		}
	}
}

func tcpConnEndpoint(t *testing.T) endpoint {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.DialTimeout("tcp", ln.Addr().String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, peer)
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(ioTimeout))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, c)
	return endpoint{orig: c, works: streamWorks(peer), adopt: connAdopt}
}

func unixConnEndpoint(t *testing.T) endpoint {
	// A short directory: socket paths are limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "fd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.DialTimeout("unix", ln.Addr().String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, peer)
	ln.(*net.UnixListener).SetDeadline(time.Now().Add(ioTimeout))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, c)
	return endpoint{orig: c, works: streamWorks(peer), adopt: connAdopt}
}

func udpEndpoint(t *testing.T) endpoint {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, pc)
	peer, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, peer)
	return endpoint{
		orig: pc,
		works: func(t *testing.T, v any) {
			t.Helper()
			c := v.(net.PacketConn)
			c.SetDeadline(time.Now().Add(ioTimeout))
			peer.SetDeadline(time.Now().Add(ioTimeout))
			if _, err := peer.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 16)
			n, from, err := c.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "ping" {
				t.Fatalf("ReadFrom: %q, %v; want ping", buf[:n], err)
			}
			if _, err := c.WriteTo([]byte("pong"), from); err != nil {
				t.Fatal(err)
			}
			n, err = peer.Read(buf)
			if err != nil || string(buf[:n]) != "pong" {
				t.Fatalf("peer read %q, %v; want pong", buf[:n], err)
			}
		},
		adopt: func(f *os.File) (io.Closer, error) { return net.FilePacketConn(f) },
	}
}

func pipeEndpoint(t *testing.T) endpoint {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, r)
	closeAtEnd(t, w)
	return endpoint{
		orig: r,
		works: func(t *testing.T, v any) {
			t.Helper()
			f := v.(*os.File)
			if err := f.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
				t.Fatalf("SetReadDeadline: %v (is the pipe still non-blocking?)", err)
			}
			if _, err := w.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(f, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("read %q, %v; want ping", buf, err)
			}
		},
		adopt: fileAdopt,
	}
}

var endpoints = []struct {
	name string
	open func(t *testing.T) endpoint
}{
	{"tcp-listener", tcpListenerEndpoint},
	{"tcp-conn", tcpConnEndpoint},
	{"udp", udpEndpoint},
	{"unix-conn", unixConnEndpoint},
	{"pipe", pipeEndpoint},
}

func TestDupKeepsNonBlockingAndSetsCloseOnExec(t *testing.T) {
	for _, tt := range endpoints {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			ep := tt.open(t)
			if statusFlags(t, ep.orig)&unix.O_NONBLOCK == 0 {
				t.Fatal("original is blocking before Dup; the test proves nothing")
			}
			nfd, err := fd.Dup(ep.orig)
			if err != nil {
				t.Fatal(err)
			}
			defer fd.Close(nfd)
			if statusFlags(t, ep.orig)&unix.O_NONBLOCK == 0 {
				t.Error("Dup switched the original to blocking mode")
			}
			if !closeOnExec(t, nfd) {
				t.Error("duplicate is not close-on-exec")
			}
			rawFD(t, ep.orig, func(orig int) {
				if orig == nfd {
					t.Errorf("Dup returned the original descriptor %d", orig)
				}
				if same, err := fd.Same(orig, nfd); err != nil || !same {
					t.Errorf("Same(original, duplicate) = %v, %v; want true", same, err)
				}
			})
			// The original still works in non-blocking mode through the
			// poller (deadlines included).
			ep.works(t, ep.orig)
		})
	}
}

func TestDupCloseDuplicateKeepsOriginal(t *testing.T) {
	for _, tt := range endpoints {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			ep := tt.open(t)
			nfd, err := fd.Dup(ep.orig)
			if err != nil {
				t.Fatal(err)
			}
			if err := fd.Close(nfd); err != nil {
				t.Fatal(err)
			}
			ep.works(t, ep.orig)
		})
	}
}

func TestDupCloseOriginalKeepsDuplicate(t *testing.T) {
	for _, tt := range endpoints {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			ep := tt.open(t)
			f, err := fd.DupFile(ep.orig, "dup-"+tt.name)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Name() != "dup-"+tt.name {
				t.Errorf("DupFile name = %q, want %q", f.Name(), "dup-"+tt.name)
			}
			if err := ep.orig.Close(); err != nil {
				t.Fatal(err)
			}
			v, err := ep.adopt(f)
			if err != nil {
				t.Fatalf("adopting the duplicate: %v", err)
			}
			defer v.Close()
			ep.works(t, v)
		})
	}
}

// notConn has no descriptor.
type notConn struct{}

func TestDupNotSyscallConn(t *testing.T) {
	a, b := net.Pipe() // in-memory: no descriptor behind it
	defer a.Close()
	defer b.Close()
	for _, v := range []any{a, notConn{}, nil, 42} {
		t.Run(fmt.Sprintf("%T", v), func(t *testing.T) {
			checkLeaks(t)
			nfd, err := fd.Dup(v)
			if !errors.Is(err, fd.ErrNotSyscallConn) {
				t.Errorf("Dup(%T) = %d, %v; want ErrNotSyscallConn", v, nfd, err)
			}
			if nfd != -1 {
				t.Errorf("Dup(%T) returned descriptor %d with an error", v, nfd)
			}
			f, err := fd.DupFile(v, "x")
			if !errors.Is(err, fd.ErrNotSyscallConn) || f != nil {
				t.Errorf("DupFile(%T) = %v, %v; want nil, ErrNotSyscallConn", v, f, err)
			}
			if _, err := fd.IdentifyConn(v); !errors.Is(err, fd.ErrNotSyscallConn) {
				t.Errorf("IdentifyConn(%T) error = %v; want ErrNotSyscallConn", v, err)
			}
		})
	}
}

func TestDupClosed(t *testing.T) {
	for _, tt := range endpoints {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			ep := tt.open(t)
			if err := ep.orig.Close(); err != nil {
				t.Fatal(err)
			}
			before := mustCount(t)
			nfd, err := fd.Dup(ep.orig)
			if err == nil {
				fd.Close(nfd)
				t.Fatalf("Dup of a closed %s succeeded (descriptor %d)", tt.name, nfd)
			}
			if nfd != -1 {
				t.Errorf("Dup returned descriptor %d with error %v", nfd, err)
			}
			if _, err := fd.IdentifyConn(ep.orig); err == nil {
				t.Error("IdentifyConn of a closed value succeeded")
			}
			if after := mustCount(t); after != before {
				t.Errorf("open descriptors went from %d to %d", before, after)
			}
		})
	}
}

func TestDupFDAndClose(t *testing.T) {
	checkLeaks(t)
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	orig := int(f.Fd())
	before := mustCount(t)
	nfd, err := fd.DupFD(orig)
	if err != nil {
		t.Fatal(err)
	}
	if nfd == orig {
		t.Fatalf("DupFD returned the original descriptor %d", nfd)
	}
	if got := mustCount(t); got != before+1 {
		t.Errorf("after DupFD: %d open, want %d", got, before+1)
	}
	if !closeOnExec(t, nfd) {
		t.Error("DupFD result is not close-on-exec")
	}
	if err := fd.Close(nfd); err != nil {
		t.Fatal(err)
	}
	if got := mustCount(t); got != before {
		t.Errorf("after Close: %d open, want %d", got, before)
	}
	if isOpen(nfd) {
		t.Errorf("descriptor %d still open after Close", nfd)
	}
	if !isOpen(orig) {
		t.Error("closing the duplicate closed the original")
	}
}

func TestBadDescriptors(t *testing.T) {
	checkLeaks(t)
	// A descriptor number that is surely not open.
	const bad = 1 << 20
	var se *os.SyscallError
	if _, err := fd.DupFD(bad); !errors.Is(err, syscall.EBADF) || !errors.As(err, &se) || se.Syscall != "fcntl" {
		t.Errorf("DupFD(bad) error = %v; want fcntl: EBADF as *os.SyscallError", err)
	}
	if err := fd.Close(bad); !errors.Is(err, syscall.EBADF) || !errors.As(err, &se) || se.Syscall != "close" {
		t.Errorf("Close(bad) error = %v; want close: EBADF as *os.SyscallError", err)
	}
	if _, err := fd.Identify(bad); !errors.Is(err, syscall.EBADF) || !errors.As(err, &se) || se.Syscall != "fstat" {
		t.Errorf("Identify(bad) error = %v; want fstat: EBADF as *os.SyscallError", err)
	}
	if _, err := fd.Same(bad, 0); !errors.Is(err, syscall.EBADF) {
		t.Errorf("Same(bad, 0) error = %v; want EBADF", err)
	}
	if _, err := fd.Same(0, bad); !errors.Is(err, syscall.EBADF) {
		t.Errorf("Same(0, bad) error = %v; want EBADF", err)
	}
}

func TestCloseAll(t *testing.T) {
	t.Run("empty", func(t *testing.T) {
		checkLeaks(t)
		if err := fd.CloseAll(nil); err != nil {
			t.Errorf("CloseAll(nil) = %v", err)
		}
	})
	t.Run("all", func(t *testing.T) {
		checkLeaks(t)
		before := mustCount(t)
		fds := openDevNull(t, 3)
		if got := mustCount(t); got != before+3 {
			t.Fatalf("%d open, want %d", got, before+3)
		}
		if err := fd.CloseAll(fds); err != nil {
			t.Fatal(err)
		}
		if got := mustCount(t); got != before {
			t.Errorf("after CloseAll: %d open, want %d", got, before)
		}
	})
	t.Run("error-in-the-middle", func(t *testing.T) {
		checkLeaks(t)
		before := mustCount(t)
		fds := openDevNull(t, 3)
		const bad = 1 << 20
		err := fd.CloseAll([]int{fds[0], bad, fds[1], bad + 1, fds[2]})
		if !errors.Is(err, syscall.EBADF) {
			t.Errorf("CloseAll error = %v; want EBADF", err)
		}
		if got := mustCount(t); got != before {
			t.Errorf("after CloseAll: %d open, want %d (it must close the rest after an error)", got, before)
		}
	})
}

func openDevNull(t *testing.T, n int) []int {
	t.Helper()
	var fds []int
	for range n {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		nfd, err := fd.Dup(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, nfd)
	}
	return fds
}

func TestIdentity(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Link(path, link); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("y"), 0o600); err != nil {
		t.Fatal(err)
	}
	open := func(p string) *os.File {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		closeAtEnd(t, f)
		return f
	}
	f1, f2, f3, f4 := open(path), open(path), open(link), open(other)

	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, ln1)
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, ln2)
	dupLn, err := fd.Dup(ln1)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close(dupLn)
	dupF, err := fd.Dup(f1)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close(dupF)

	raw := func(v any) int {
		var n int
		rawFD(t, v, func(fd int) { n = fd })
		return n
	}
	tests := []struct {
		name string
		a, b int
		want bool
	}{
		{"file-and-its-dup", raw(f1), dupF, true},
		{"two-opens-of-one-file", raw(f1), raw(f2), true},
		{"hard-link", raw(f1), raw(f3), true},
		{"different-files", raw(f1), raw(f4), false},
		{"listener-and-its-dup", raw(ln1), dupLn, true},
		{"two-listeners", raw(ln1), raw(ln2), false},
		{"file-and-socket", raw(f1), raw(ln1), false},
		{"itself", raw(ln2), raw(ln2), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := fd.Same(tt.a, tt.b)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Same(%d, %d) = %v, want %v", tt.a, tt.b, got, tt.want)
			}
			ia, err := fd.Identify(tt.a)
			if err != nil {
				t.Fatal(err)
			}
			ib, err := fd.Identify(tt.b)
			if err != nil {
				t.Fatal(err)
			}
			if (ia == ib) != tt.want {
				t.Errorf("Identify: %v and %v, want equal = %v", ia, ib, tt.want)
			}
			if ia == (fd.ID{}) {
				t.Error("Identify returned the zero ID")
			}
		})
	}

	t.Run("matches-stat", func(t *testing.T) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		want := fd.ID{Dev: uint64(st.Dev), Ino: uint64(st.Ino)}
		got, err := fd.Identify(raw(f2))
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("Identify = %v, want %v (from stat)", got, want)
		}
		if s, w := got.String(), fmt.Sprintf("%d:%d", want.Dev, want.Ino); s != w {
			t.Errorf("String() = %q, want %q", s, w)
		}
	})

	t.Run("IdentifyConn", func(t *testing.T) {
		for _, v := range []any{f1, ln1, ln2} {
			got, err := fd.IdentifyConn(v)
			if err != nil {
				t.Fatal(err)
			}
			want, err := fd.Identify(raw(v))
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("IdentifyConn(%T) = %v, want %v", v, got, want)
			}
		}
	})
}

func TestCount(t *testing.T) {
	checkLeaks(t)
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		open func() (io.Closer, error)
		n    int
	}{
		{"file", func() (io.Closer, error) { return os.Open(path) }, 1},
		{"tcp-listener", func() (io.Closer, error) { return net.Listen("tcp", "127.0.0.1:0") }, 1},
		{"udp", func() (io.Closer, error) { return net.ListenPacket("udp", "127.0.0.1:0") }, 1},
		{"pipe", func() (io.Closer, error) {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			return closers{r, w}, nil
		}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			before := mustCount(t)
			c, err := tt.open()
			if err != nil {
				t.Fatal(err)
			}
			if got := mustCount(t); got != before+tt.n {
				t.Errorf("after open: Count = %d, want %d", got, before+tt.n)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if got := mustCount(t); got != before {
				t.Errorf("after close: Count = %d, want %d", got, before)
			}
		})
	}
}

type closers []io.Closer

func (cs closers) Close() error {
	var first error
	for _, c := range cs {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

//go:build linux

package unixmsg_test

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/fdpass/fdpass/internal/childtest"
	"github.com/fdpass/fdpass/internal/fdtest"
	"github.com/fdpass/fdpass/unixmsg"
)

// registerChild adds a role whose function reports its own failure (see
// childFatal).
func registerChild(role string, f func()) bool {
	return childtest.Register(role, func() error { f(); return nil })
}

func TestMain(m *testing.M) { childtest.Main(m) }

func checkLeaks(t testing.TB) {
	t.Helper()
	fdtest.CheckLeaks(t)
}

// startChild re-runs the test binary as role, handing it the given files as
// descriptors 3, 4, ..., and returns the function that waits for it.
func startChild(t testing.TB, role string, env []string, files ...*os.File) func() error {
	t.Helper()
	return childtest.Start(t, role, childtest.Options{Env: env, Files: files}).Wait
}

// socketPairFiles returns a connected unix socket pair of type typ as
// files, for handing one end to a child.
func socketPairFiles(t testing.TB, typ int) (*os.File, *os.File) {
	t.Helper()
	p, err := syscall.Socketpair(syscall.AF_UNIX, typ|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(p[0]), "a"), os.NewFile(uintptr(p[1]), "b")
}

// fileConn turns a socket file into a unixmsg.Conn; the file is closed.
func fileConn(t testing.TB, f *os.File, opts *unixmsg.Options) *unixmsg.Conn {
	t.Helper()
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	mc, err := unixmsg.NewConn(c.(*net.UnixConn), opts)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	return mc
}

// childConn returns the unixmsg.Conn on descriptor 3 in a child.
func childConn(opts *unixmsg.Options) *unixmsg.Conn {
	f := os.NewFile(3, "parent")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		childFatal(err)
	}
	mc, err := unixmsg.NewConn(c.(*net.UnixConn), opts)
	if err != nil {
		childFatal(err)
	}
	return mc
}

func childFatal(err error) {
	fmt.Fprintln(os.Stderr, "child:", err)
	os.Exit(1)
}

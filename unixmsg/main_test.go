//go:build linux

package unixmsg_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/fdpass/fdpass/internal/fdtest"
	"github.com/fdpass/fdpass/unixmsg"
)

// childEnv names the child role when the test binary re-runs itself as a
// second process.
const childEnv = "UNIXMSG_TEST_CHILD"

// children maps a role to the function that plays it; each test file adds
// its own roles through registerChild.
var children = map[string]func(){}

func registerChild(role string, f func()) bool {
	children[role] = f
	return true
}

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		f, ok := children[role]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown child role %q\n", role)
			os.Exit(2)
		}
		f()
		os.Exit(0)
	}
	warmUp()
	os.Exit(m.Run())
}

func warmUp() { fdtest.WarmUp() }

func checkLeaks(t testing.TB) {
	t.Helper()
	fdtest.CheckLeaks(t)
}

// startChild re-runs the test binary as role, handing it the given files as
// descriptors 3, 4, ... The child's stderr goes to the test log when it
// fails. The returned function waits for the child and returns its error.
func startChild(t testing.TB, role string, env []string, files ...*os.File) (*exec.Cmd, func() error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"="+role), env...)
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	var werr error
	wait := func() error {
		if !waited {
			waited = true
			werr = cmd.Wait()
		}
		return werr
	}
	t.Cleanup(func() {
		if !waited {
			cmd.Process.Kill()
			wait()
		}
	})
	return cmd, wait
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

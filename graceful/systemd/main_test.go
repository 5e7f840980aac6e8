//go:build linux

package systemd_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/internal/fdtest"
	"golang.org/x/sys/unix"
)

// childEnv names the child role when the test binary re-runs itself as
// another process.
const childEnv = "SYSTEMD_TEST_CHILD"

// children maps a role to the function that plays it; each test file adds
// its own roles through registerChild. A role returns an error to fail the
// child.
var children = map[string]func() error{}

func registerChild(role string, f func() error) bool {
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
		warmUp()
		if err := f(); err != nil {
			fmt.Fprintf(os.Stderr, "child %s (pid %d): %v\n", role, os.Getpid(), err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// The tests set these themselves; inherited ones would mislead them.
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET"} {
		os.Unsetenv(v)
	}
	warmUp()
	os.Exit(m.Run())
}

func warmUp() { fdtest.WarmUp() }

func checkLeaks(t testing.TB) {
	t.Helper()
	fdtest.CheckLeaks(t)
}

func count(t testing.TB) int {
	t.Helper()
	n, err := fd.Count()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// awaitCount waits until the process has want descriptors open, giving
// goroutines that are still closing theirs a deadline.
func awaitCount(want int) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := fd.Count()
		if err != nil {
			return err
		}
		if got == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("descriptor leak: %d open before, %d after", want, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// deadline bounds every wait for a peer in these tests; reaching it is a
// failure, never a way to synchronise.
func deadline() time.Time { return time.Now().Add(10 * time.Second) }

// childEnviron is the test's environment without systemd's variables, plus
// the child role and env.
func childEnviron(role string, env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", childEnv:
			continue
		}
		out = append(out, kv)
	}
	return append(append(out, childEnv+"="+role), env...)
}

// child is a test binary re-run as a role.
type child struct {
	t      testing.TB
	cmd    *exec.Cmd
	waited bool
	err    error
}

// startChild re-runs the test binary as role with env added, handing it
// files as descriptors 3, 4, ...
func startChild(t testing.TB, role string, env []string, files ...*os.File) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = childEnviron(role, env...)
	return start(t, cmd, files)
}

// startActivated plays systemd: it re-runs the test binary as role with
// files as descriptors 3, 4, ..., LISTEN_FDS, LISTEN_FDNAMES (names joined
// by ':', unless names is nil) and LISTEN_PID set to the child's PID. A
// shell sets LISTEN_PID to its own PID and execs the test binary, which
// keeps that PID, as systemd does between fork and exec.
func startActivated(t testing.TB, role string, env []string, names []string, files ...*os.File) *child {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`, os.Args[0], "-test.run=^$")
	env = append(env, "LISTEN_FDS="+strconv.Itoa(len(files)))
	if names != nil {
		env = append(env, "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	cmd.Env = childEnviron(role, env...)
	return start(t, cmd, files)
}

func start(t testing.TB, cmd *exec.Cmd, files []*os.File) *child {
	t.Helper()
	cmd.ExtraFiles = files
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, cmd: cmd}
	t.Cleanup(func() {
		if !c.waited {
			cmd.Process.Kill()
			c.wait()
		}
	})
	return c
}

func (c *child) wait() error {
	if !c.waited {
		c.waited = true
		c.err = c.cmd.Wait()
	}
	return c.err
}

// mustExit fails the test unless the child exits with status 0.
func (c *child) mustExit() {
	c.t.Helper()
	if err := c.wait(); err != nil {
		c.t.Fatalf("child %v: %v", c.cmd.Args, err)
	}
}

// lines forwards every line read from r to the returned channel, and
// closes it at EOF.
func lines(r io.Reader) <-chan string {
	ch := make(chan string, 64)
	go func() {
		defer close(ch)
		s := bufio.NewScanner(r)
		for s.Scan() {
			ch <- s.Text()
		}
	}()
	return ch
}

// isCloexec reports whether descriptor n is open and close-on-exec.
func isCloexec(n int) (bool, error) {
	flags, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0)
	if err != nil {
		return false, os.NewSyscallError("fcntl", err)
	}
	return flags&unix.FD_CLOEXEC != 0, nil
}

// isOpen reports whether descriptor n is open.
func isOpen(n int) bool {
	_, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0)
	return err == nil
}

// countLeaks returns a function that reports an error unless the process
// has closed as many descriptors as it was passed (closed) since countLeaks
// was called; children use it as checkLeaks.
func countLeaks(closed int) (func() error, error) {
	before, err := fd.Count()
	if err != nil {
		return nil, err
	}
	return func() error {
		if err := awaitCount(before - closed); err != nil {
			return fmt.Errorf("%w (%d passed descriptors closed)", err, closed)
		}
		return nil
	}, nil
}

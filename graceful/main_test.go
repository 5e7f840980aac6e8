//go:build linux

package graceful_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/internal/fdtest"
	"github.com/fdpass/fdpass/internal/handoffbench"
)

// The restart API's tests re-run the test binary as child processes, each
// generation of a service its own process. restartChildEnv names the role;
// TestMain plays it instead of running tests.
const restartChildEnv = "FDPASS_GRACEFUL_RESTART_CHILD"

// restartRoles maps a role to the function that plays it; a role returns
// an error to fail the child (exit status 1).
var restartRoles = map[string]func() error{}

func registerRestartRole(name string, f func() error) bool {
	restartRoles[name] = f
	return true
}

func TestMain(m *testing.M) {
	// A generation of BenchmarkHandoff's fresh successors: first, so
	// that nothing runs before it that a real successor would not run.
	handoffbench.Main()
	if role := os.Getenv(restartChildEnv); role != "" {
		f, ok := restartRoles[role]
		if !ok {
			fmt.Fprintf(os.Stderr, "restart child: unknown role %q\n", role)
			os.Exit(2)
		}
		restartWarmUp()
		if err := f(); err != nil {
			fmt.Fprintf(os.Stderr, "restart child %s (pid %d): %v\n", role, os.Getpid(), err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	restartWarmUp()
	os.Exit(m.Run())
}

// restartWarmUp makes the runtime open what it opens once (the network
// poller), so that descriptor counts compare like with like.
func restartWarmUp() { fdtest.WarmUp() }

// awaitFDCount polls until the process has want descriptors open, or
// fails after a deadline.
func awaitFDCount(want int) error { return fdtest.AwaitCount(want) }

// restartCheckLeaks fails t unless the descriptor count is back where it
// was when the test ends.
func restartCheckLeaks(t testing.TB) {
	t.Helper()
	fdtest.CheckLeaks(t)
}

// restartChild is a child process whose stdout lines the test reads.
type restartChild struct {
	t     testing.TB
	cmd   *exec.Cmd
	lines chan string
	once  sync.Once
	werr  error
	name  string
}

// startRestartChild runs role in a new process of the test binary (bin,
// or the running one if empty) with env added.
func startRestartChild(t testing.TB, bin, role string, attr *syscall.SysProcAttr, env ...string) *restartChild {
	t.Helper()
	if bin == "" {
		bin = os.Args[0]
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), restartChildEnv+"="+role), env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = attr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &restartChild{t: t, cmd: cmd, lines: make(chan string, 1024), name: fmt.Sprintf("%s[%d]", role, cmd.Process.Pid)}
	go func() {
		s := bufio.NewScanner(out)
		verbose := os.Getenv("GRACEFUL_TEST_VERBOSE") != ""
		for s.Scan() {
			if verbose {
				fmt.Fprintf(os.Stderr, "%s: %s\n", c.name, s.Text())
			}
			c.lines <- s.Text()
		}
		io.Copy(io.Discard, out)
		close(c.lines)
	}()
	t.Cleanup(func() {
		c.cmd.Process.Signal(syscall.SIGCONT)
		c.cmd.Process.Kill()
		c.wait()
	})
	return c
}

// expect returns the first line containing prefix, skipping others,
// and fails the test if none comes before the deadline or the child ends.
func (c *restartChild) expect(prefix string) string {
	c.t.Helper()
	timeout := time.NewTimer(60 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				c.t.Fatalf("%s ended without saying %q: %v", c.name, prefix, c.wait())
			}
			if strings.Contains(l, prefix) {
				return l
			}
		case <-timeout.C:
			c.t.Fatalf("%s did not say %q in time", c.name, prefix)
		}
	}
}

// wait waits for the child to end (after its stdout is read to the end)
// and returns its exit error.
func (c *restartChild) wait() error {
	c.once.Do(func() {
		for range c.lines {
		}
		c.werr = c.cmd.Wait()
	})
	return c.werr
}

// mustExit fails the test unless the child ends with status 0.
func (c *restartChild) mustExit() {
	c.t.Helper()
	if err := c.wait(); err != nil {
		c.t.Errorf("%s: %v", c.name, err)
	}
}

// say writes one line to the parent.
func say(format string, args ...any) {
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

// field returns the value of key=value in a line of words.
func field(line, key string) string {
	for _, w := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(w, key+"="); ok {
			return v
		}
	}
	return ""
}

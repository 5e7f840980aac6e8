//go:build linux

package graceful_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/internal/childtest"
	"github.com/fdpass/fdpass/internal/fdtest"
	"github.com/fdpass/fdpass/internal/handoffbench"
)

// The restart API's tests re-run the test binary as child processes, each
// generation of a service its own process (internal/childtest).

func registerRestartRole(name string, f func() error) bool { return childtest.Register(name, f) }

func TestMain(m *testing.M) {
	// A generation of BenchmarkHandoff's fresh successors: first, so
	// that nothing runs before it that a real successor would not run.
	handoffbench.Main()
	childtest.Main(m)
}

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
	t   testing.TB
	c   *childtest.Child
	cmd *exec.Cmd
}

// startRestartChild runs role in a new process of the test binary (bin,
// or the running one if empty) with env added.
func startRestartChild(t testing.TB, bin, role string, attr *syscall.SysProcAttr, env ...string) *restartChild {
	t.Helper()
	c := childtest.Start(t, role, childtest.Options{Bin: bin, SysProcAttr: attr, Env: env})
	return &restartChild{t: t, c: c, cmd: c.Cmd}
}

// expect returns the first line containing prefix, skipping others,
// and fails the test if none comes before the deadline or the child ends.
func (c *restartChild) expect(prefix string) string {
	c.t.Helper()
	return c.c.Expect(prefix)
}

// wait waits for the child to end and returns its exit error.
func (c *restartChild) wait() error { return c.c.Wait() }

// mustExit fails the test unless the child ends with status 0.
func (c *restartChild) mustExit() {
	c.t.Helper()
	if err := c.wait(); err != nil {
		c.t.Errorf("%s: %v", c.c.Name, err)
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

// readyGeneration starts a generation in this process with opts and a TCP
// listener on a port of its own, says Ready, and has both closed when the
// test ends.
func readyGeneration(t testing.TB, opts graceful.Options) (*graceful.Process, net.Listener) {
	t.Helper()
	p, err := graceful.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	ln, err := p.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if err := p.Ready(); err != nil {
		t.Fatal(err)
	}
	return p, ln
}

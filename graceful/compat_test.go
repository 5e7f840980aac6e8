//go:build linux

package graceful_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/unixmsg"
)

// The handler API's tests re-run the test binary as a child process with
// -test.run=^TestCompatChild$ and compatChildEnv naming the child's role;
// they leave TestMain alone.
const compatChildEnv = "FDPASS_GRACEFUL_COMPAT_CHILD"

// compatRoles maps a child role to the function that plays it. A role
// returns an error to fail the child; it talks to the parent through
// stdout lines starting with "compat:" and takes its parameters from the
// environment.
var compatRoles = map[string]func() error{
	"server":            compatRoleServer,
	"client":            compatRoleClient,
	"client-expect-err": compatRoleClientExpectErr,
	"hangup":            compatRoleHangup,
	"hangup-after-read": compatRoleHangupAfterRead,
}

// TestCompatChild is not a test: it plays a child role when a compat test
// re-runs the binary, and skips otherwise.
func TestCompatChild(t *testing.T) {
	role := os.Getenv(compatChildEnv)
	if role == "" {
		t.Skip("helper process for the handler API's cross-process tests")
	}
	f, ok := compatRoles[role]
	if !ok {
		fmt.Fprintf(os.Stderr, "compat child: unknown role %q\n", role)
		os.Exit(2)
	}
	compatWarmUp()
	if err := f(); err != nil {
		fmt.Fprintf(os.Stderr, "compat child %s: %v\n", role, err)
		os.Exit(1)
	}
	os.Exit(0)
}

var compatWarm sync.Once

// compatWarmUp makes the runtime open what it opens once (the network
// poller and so on), so that descriptor counts compare like with like.
func compatWarmUp() {
	compatWarm.Do(func() {
		if a, b, err := unixmsg.Pair(nil); err == nil {
			a.Close()
			b.Close()
		}
		if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
			ln.Close()
		}
		if pc, err := net.ListenPacket("udp", "127.0.0.1:0"); err == nil {
			pc.Close()
		}
		_ = exec.Command("/bin/true").Run()
	})
}

// compatCount returns the process's open-descriptor count.
func compatCount(t testing.TB) int {
	t.Helper()
	n, err := fd.Count()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// compatAwaitCount waits, up to a deadline, for the process's open
// descriptors to number want; descriptors closed by goroutines that are
// still finishing get the time to go.
func compatAwaitCount(want int) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := fd.Count()
		if err != nil {
			return err
		}
		if n == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("descriptor leak: %d open, want %d", n, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// compatCheckLeaks fails t unless, when it ends, the process has as many
// descriptors open as now.
func compatCheckLeaks(t testing.TB) {
	t.Helper()
	compatWarmUp()
	before := compatCount(t)
	t.Cleanup(func() {
		if err := compatAwaitCount(before); err != nil {
			t.Error(err)
		}
	})
}

// compatChild is a running child process and the "compat:" lines it
// prints.
type compatChild struct {
	t      testing.TB
	role   string
	cmd    *exec.Cmd
	lines  chan string
	waited bool
	err    error
}

func compatStart(t testing.TB, role string, env ...string) *compatChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCompatChild$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), compatChildEnv+"="+role), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &compatChild{t: t, role: role, cmd: cmd, lines: make(chan string, 16)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l, ok := strings.CutPrefix(sc.Text(), "compat: "); ok {
				c.lines <- l
			}
		}
	}()
	t.Cleanup(func() {
		if !c.waited {
			cmd.Process.Kill()
			c.wait()
		}
	})
	return c
}

// line returns the child's next line.
func (c *compatChild) line() string {
	c.t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			c.t.Fatalf("child %s: exited (%v) before printing what was expected", c.role, c.wait())
		}
		return l
	case <-time.After(30 * time.Second):
		c.t.Fatalf("child %s: no line in 30s", c.role)
	}
	return ""
}

// wait waits for the child to exit and returns its error.
func (c *compatChild) wait() error {
	if !c.waited {
		c.waited = true
		for range c.lines {
		}
		c.err = c.cmd.Wait()
	}
	return c.err
}

// mustExit fails the test unless the child exits successfully.
func (c *compatChild) mustExit() {
	c.t.Helper()
	if err := c.wait(); err != nil {
		c.t.Fatalf("child %s: %v", c.role, err)
	}
}

func compatSay(format string, args ...any) {
	fmt.Printf("compat: "+format+"\n", args...)
}

// compatSockPath returns a path for a unix socket in a fresh directory.
func compatSockPath(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "h.sock")
}

// compatLog is a slog.Handler that hands the messages of its records to a
// channel, for tests that wait for the server to report something.
type compatLog struct{ msgs chan string }

func newCompatLog() (*slog.Logger, chan string) {
	ch := make(chan string, 64)
	return slog.New(compatLog{ch}), ch
}

func (l compatLog) Enabled(context.Context, slog.Level) bool { return true }
func (l compatLog) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" {
			msg += ": " + a.Value.String()
		}
		return true
	})
	select {
	case l.msgs <- msg:
	default:
	}
	return nil
}
func (l compatLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l compatLog) WithGroup(string) slog.Handler      { return l }

// awaitLog waits for a log message starting with prefix.
func awaitLog(t testing.TB, msgs chan string, prefix string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case m := <-msgs:
			if strings.HasPrefix(m, prefix) {
				return m
			}
		case <-timeout:
			t.Fatalf("no log message %q in 30s", prefix)
		}
	}
}

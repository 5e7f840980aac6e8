//go:build linux

package graceful_test

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/internal/childtest"
	"github.com/fdpass/fdpass/internal/fdtest"
)

// The handler API's tests re-run the test binary as a child process in
// one of these roles (internal/childtest). A role talks to the parent
// through stdout lines starting with "compat:" and takes its parameters
// from the environment.
var (
	_ = childtest.Register("compat-server", compatRoleServer)
	_ = childtest.Register("compat-client", compatRoleClient)
	_ = childtest.Register("compat-client-expect-err", compatRoleClientExpectErr)
	_ = childtest.Register("compat-hangup", compatRoleHangup)
	_ = childtest.Register("compat-hangup-after-read", compatRoleHangupAfterRead)
)

// compatCount returns the process's open-descriptor count.
func compatCount(t testing.TB) int { return mustCount(t) }

// compatAwaitCount waits, up to a deadline, for the process's open
// descriptors to number want.
func compatAwaitCount(want int) error { return fdtest.AwaitCount(want) }

// compatCheckLeaks fails t unless, when it ends, the process has as many
// descriptors open as now.
func compatCheckLeaks(t testing.TB) {
	t.Helper()
	fdtest.CheckLeaks(t)
}

// compatChild is a running child process and the "compat:" lines it
// prints.
type compatChild struct {
	t    testing.TB
	role string
	c    *childtest.Child
	cmd  *exec.Cmd
}

func compatStart(t testing.TB, role string, env ...string) *compatChild {
	t.Helper()
	c := childtest.Start(t, "compat-"+role, childtest.Options{Env: env, Timeout: 30 * time.Second})
	return &compatChild{t: t, role: role, c: c, cmd: c.Cmd}
}

// line returns the child's next "compat:" line, without the prefix.
func (c *compatChild) line() string {
	c.t.Helper()
	l := c.c.Expect("compat: ")
	_, l, _ = strings.Cut(l, "compat: ")
	return l
}

// wait waits for the child to exit and returns its error.
func (c *compatChild) wait() error { return c.c.Wait() }

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

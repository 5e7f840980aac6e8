//go:build linux

package systemd_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/internal/childtest"
	"github.com/fdpass/fdpass/internal/fdtest"
	"golang.org/x/sys/unix"
)

// systemdEnv are the variables of systemd's protocols. The tests set them
// themselves; inherited ones would mislead them, so neither the test
// process nor its children inherit them.
var systemdEnv = []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET"}

func TestMain(m *testing.M) {
	if childtest.Role() == "" {
		for _, v := range systemdEnv {
			os.Unsetenv(v)
		}
	}
	childtest.Main(m)
}

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

// deadline bounds every wait for a peer in these tests; reaching it is a
// failure, never a way to synchronise.
func deadline() time.Time { return time.Now().Add(10 * time.Second) }

// startChild re-runs the test binary as role with env added, handing it
// files as descriptors 3, 4, ...
func startChild(t testing.TB, role string, env []string, files ...*os.File) *childtest.Child {
	t.Helper()
	return childtest.Start(t, role, childtest.Options{Env: env, Unset: systemdEnv, Files: files})
}

// startActivated plays systemd: it re-runs the test binary as role with
// files as descriptors 3, 4, ..., LISTEN_FDS, LISTEN_FDNAMES (names joined
// by ':', unless names is nil) and LISTEN_PID set to the child's PID. A
// shell sets LISTEN_PID to its own PID and execs the test binary, which
// keeps that PID, as systemd does between fork and exec.
func startActivated(t testing.TB, role string, env []string, names []string, files ...*os.File) *childtest.Child {
	t.Helper()
	env = append(env, "LISTEN_FDS="+strconv.Itoa(len(files)))
	if names != nil {
		env = append(env, "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	return childtest.Start(t, role, childtest.Options{
		Prefix: []string{"/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`},
		Env:    env,
		Unset:  systemdEnv,
		Files:  files,
	})
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
		if err := fdtest.AwaitCount(before - closed); err != nil {
			return fmt.Errorf("%w (%d passed descriptors closed)", err, closed)
		}
		return nil
	}, nil
}

package main_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/examples/internal/load"
	"github.com/fdpass/fdpass/examples/internal/proc"
)

// TestReload upgrades a running instance the two ways an operator does:
// SIGHUP (the instance starts its successor, this binary again), and
// -reload, which waits for the verdict: exit 0 once the successor has
// taken over; non-zero, with the reason, when the binary on disk fails
// before READY, while the running instance serves on. Not one request
// fails meanwhile.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	built := proc.BuildT(t, dir, "github.com/fdpass/fdpass/examples/httpserver")
	// The served binary lives at a path of its own, which the test
	// replaces; the client runs from the build.
	bin := filepath.Join(dir, "served", "httpserver")
	install := func(src string) {
		t.Helper()
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		// A new file renamed into place, as a package manager does: the
		// running process keeps its own.
		tmp := bin + ".new"
		if err := os.WriteFile(tmp, b, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, bin); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	install(built)
	sock := filepath.Join(dir, "handoff.sock")
	first := proc.StartT(t, bin, "-graceful", sock, "-listen", "127.0.0.1:0", "-drain", "10s")
	line, err := first.Await("ready", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ld, err := load.Start(load.Options{Addr: proc.Field(line, "addr"), KeepAlive: 16, Timeout: requestTimeout, Pause: pause})
	if err != nil {
		t.Fatal(err)
	}
	defer ld.Stop()
	serving := first.PID()
	if _, err := ld.AwaitInstance(strconv.Itoa(serving), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// Successors started by the instances themselves are not this
	// test's children: end them by pid.
	t.Cleanup(func() { syscall.Kill(serving, syscall.SIGKILL) })

	// SIGHUP: the successor's lines come on the first instance's
	// standard output, which it inherits.
	before := ld.Stats()
	if err := syscall.Kill(serving, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	l, err := first.Await("ready", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	next, _ := strconv.Atoi(proc.Field(l, "pid"))
	if next == serving || next == 0 {
		t.Fatalf("after SIGHUP: %q", l)
	}
	awaitGone(t, serving)
	serving = next
	if _, err := ld.AwaitInstance(strconv.Itoa(serving), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if st := ld.Stats().Sub(before); st.Migrated == 0 {
		t.Errorf("SIGHUP: no connection migrated: %v", st)
	}

	// -reload: waits for the verdict.
	reload := func() (string, string, error) {
		cmd := exec.Command(built, "-graceful", sock, "-reload")
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String(), errb.String(), err
	}
	before = ld.Stats()
	out, stderr, err := reload()
	if err != nil {
		t.Fatalf("-reload: %v: %s", err, stderr)
	}
	next, _ = strconv.Atoi(proc.Field(out, "successor"))
	if next == serving || next == 0 {
		t.Fatalf("-reload said %q", out)
	}
	// The verdict comes once the successor has taken over: the old one
	// stops answering.
	awaitGone(t, serving)
	serving = next
	if _, err := ld.AwaitInstance(strconv.Itoa(serving), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if st := ld.Stats().Sub(before); st.Migrated == 0 {
		t.Errorf("-reload: no connection migrated: %v", st)
	}

	// A broken binary on disk: the reload fails, and says why.
	broken := filepath.Join(dir, "broken")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho 'httpserver: configuration error on line 3' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	install(broken)
	_, stderr, err = reload()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Errorf("-reload onto a failing binary: %v, want a non-zero exit", err)
	}
	for _, want := range []string{"status 3", "configuration error on line 3"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("-reload onto a failing binary said %q, want %q in it", stderr, want)
		}
	}
	// Still served by the same instance.
	if st, err := ld.AwaitInstance(strconv.Itoa(serving), 30*time.Second); err != nil {
		t.Fatalf("after the failed reload: %v: %v", err, st)
	}
	if !alive(serving) {
		t.Fatalf("instance %d ended after a failed reload", serving)
	}

	// Fixed, it works again.
	install(built)
	if out, stderr, err = reload(); err != nil {
		t.Fatalf("-reload: %v: %s", err, stderr)
	}
	next, _ = strconv.Atoi(proc.Field(out, "successor"))
	awaitGone(t, serving)
	serving = next
	if _, err := ld.AwaitInstance(strconv.Itoa(serving), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	st := ld.Stop()
	t.Logf("in all: %v", st)
	if st.Failed != 0 {
		t.Errorf("%d requests failed; first errors: %q", st.Failed, st.Errors)
	}
	if err := first.Races(); err != nil {
		t.Error(err)
	}
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// awaitGone waits for pid to end.
func awaitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("instance %d still runs", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

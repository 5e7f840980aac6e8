//go:build linux

package main_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/examples/internal/proc"
)

// TestLogInOrderAcrossTakeovers hands the service over five times while
// each generation appends numbered lines to the shared log, then checks
// that the log holds every number exactly once, in order, and that every
// generation found the state its predecessor left.
func TestLogInOrderAcrossTakeovers(t *testing.T) {
	dir := t.TempDir()
	bin := proc.BuildT(t, dir, "github.com/fdpass/fdpass/examples/filepass")
	logPath := filepath.Join(dir, "service.log")
	args := []string{"-graceful", filepath.Join(dir, "handoff.sock"), "-log", logPath}

	// linesBy polls until the log has n lines written by pid.
	linesBy := func(pid, n int) {
		t.Helper()
		tag := " pid=" + strconv.Itoa(pid) + " "
		deadline := time.Now().Add(10 * time.Second)
		for {
			b, _ := os.ReadFile(logPath)
			if strings.Count(string(b), tag) >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("pid %d wrote fewer than %d lines in 10s", pid, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	current := proc.StartT(t, bin, args...)
	line, err := current.Await("ready", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if proc.Field(line, "next") != "0" || proc.Field(line, "inherited") != "false" {
		t.Fatalf("first generation: %q", line)
	}
	pids := []int{current.PID()}
	for range 5 {
		linesBy(current.PID(), 30)
		next := proc.StartT(t, bin, args...)
		line, err := next.Await("ready", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := strconv.Atoi(proc.Field(line, "next")); n < 30 || proc.Field(line, "inherited") != "true" {
			t.Fatalf("successor did not find its predecessor's state: %q", line)
		}
		if err := current.Wait(10 * time.Second); err != nil {
			t.Fatalf("old generation: %v", err)
		}
		current = next
		pids = append(pids, current.PID())
	}
	linesBy(current.PID(), 30)
	syscall.Kill(current.PID(), syscall.SIGTERM)
	if err := current.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}

	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	seen := map[string]bool{}
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != strconv.Itoa(i) {
			t.Fatalf("line %d is %q, want it numbered %d", i, l, i)
		}
		seen[strings.TrimPrefix(f[1], "pid=")] = true
	}
	for _, pid := range pids {
		if !seen[strconv.Itoa(pid)] {
			t.Errorf("generation %d wrote nothing", pid)
		}
	}
	t.Logf("%d lines from %d generations", len(lines), len(pids))
}

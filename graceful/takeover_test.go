//go:build linux

package graceful_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/graceful"
)

// TestPredecessorPID: after two takeovers, the successor names the process
// that offered, not the one that created the handoff socket (which
// SO_PEERCRED reports, generations back).
func TestPredecessorPID(t *testing.T) {
	dir := t.TempDir()
	first := startRestartChild(t, "", "gen", nil, genEnv(dir, 10*time.Second)...)
	first.expect("ready gen=1 ")
	second := startRestartChild(t, "", "gen", nil, genEnv(dir, 10*time.Second)...)
	if l := second.expect("received descriptors from predecessor"); field(l, "pid") != fmt.Sprint(first.cmd.Process.Pid) {
		t.Errorf("second generation names its predecessor %q, want %d: %s", field(l, "pid"), first.cmd.Process.Pid, l)
	}
	second.expect("ready gen=2 ")
	first.mustExit()
	third := startRestartChild(t, "", "gen", nil, genEnv(dir, 10*time.Second)...)
	if l := third.expect("received descriptors from predecessor"); field(l, "pid") != fmt.Sprint(second.cmd.Process.Pid) {
		t.Errorf("third generation names its predecessor %q, want %d (the first was %d): %s",
			field(l, "pid"), second.cmd.Process.Pid, first.cmd.Process.Pid, l)
	}
	third.expect("ready gen=3 ")
	second.mustExit()
}

// TestMigratedConnsOrder: MigratedConns before Ready is an error, not an
// empty list; after Ready with a predecessor that does not migrate, it
// says so.
func TestMigratedConnsOrder(t *testing.T) {
	restartCheckLeaks(t)
	path := filepath.Join(t.TempDir(), "handoff.sock")
	p1, err := graceful.New(graceful.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer p1.Close()
	if _, err := p1.MigratedConns(); !errors.Is(err, graceful.ErrNotReady) {
		t.Errorf("MigratedConns before Ready: %v, want ErrNotReady", err)
	}
	if err := p1.Ready(); err != nil {
		t.Fatal(err)
	}
	if cs, err := p1.MigratedConns(); err != nil || len(cs) != 0 {
		t.Errorf("MigratedConns of the first generation: %d, %v; want none, nil", len(cs), err)
	}
	p2, err := graceful.New(graceful.Options{Path: path, Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if _, err := p2.MigratedConns(); !errors.Is(err, graceful.ErrNotReady) {
		t.Errorf("MigratedConns before Ready: %v, want ErrNotReady", err)
	}
	if err := p2.Ready(); err != nil {
		t.Fatal(err)
	}
	<-p1.Exit()
	_, err = p2.MigratedConns()
	if !errors.Is(err, graceful.ErrNoMigration) {
		t.Errorf("MigratedConns with a predecessor that does not migrate: %v, want ErrNoMigration", err)
	}
	if err != nil && !strings.Contains(err.Error(), "pid") {
		t.Errorf("ErrNoMigration does not name the predecessor: %v", err)
	}
}

// TestCreateErrorPath: when the handoff socket cannot be created, the error
// names the path asked for, and no other.
func TestCreateErrorPath(t *testing.T) {
	restartCheckLeaks(t)
	path := filepath.Join(t.TempDir(), "missing", "handoff.sock")
	p, err := graceful.New(graceful.Options{Path: path})
	if err == nil {
		p.Close()
		t.Fatal("New succeeded in a directory that does not exist")
	}
	if !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), ".fdpass") {
		t.Errorf("error %q does not name %s alone", err, path)
	}
}

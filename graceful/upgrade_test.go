//go:build linux

package graceful_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/internal/childtest"
)

// The upgrade tests run this process as the predecessor; Upgrade starts
// the test binary again as the successor, in the role "upgrade-gen",
// whose behaviour envUpgradeMode picks.
const (
	envUpgradeMode = "GT_UPGRADE_MODE" // healthy, exit3, hang, refuse-migration
	envPIDFile     = "GT_PID_FILE"     // where the successor writes its pid
)

var _ = registerRestartRole("upgrade-gen", roleUpgradeGen)

// roleUpgradeGen is a successor started by Upgrade.
func roleUpgradeGen() error {
	mode := os.Getenv(envUpgradeMode)
	if f := os.Getenv(envPIDFile); f != "" {
		if err := os.WriteFile(f, []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			return err
		}
	}
	opts := graceful.Options{Path: os.Getenv(envPath), Migrate: true}
	if mode == "refuse-migration" {
		opts.Migrated = func([]*graceful.Conn) error { return errors.New("not today") }
	}
	p, err := graceful.New(opts)
	if err != nil {
		return err
	}
	ln, err := p.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	switch mode {
	case "exit3":
		fmt.Fprintln(os.Stderr, "upgrade-gen: the configuration is broken")
		os.Exit(3)
	case "hang":
		time.Sleep(time.Hour)
	}
	if err := p.Ready(); err != nil {
		return err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "pid=%d\n", os.Getpid())
			c.Close()
		}
	}()
	// Serve until killed.
	<-p.Exit()
	return nil
}

// upgradeFixture is a predecessor in this process with a TCP listener,
// whose Upgrade starts roleUpgradeGen.
type upgradeFixture struct {
	p       *graceful.Process
	ln      net.Listener
	path    string
	pidFile string
	mode    string
	mu      sync.Mutex
}

func newUpgradeFixture(t *testing.T, timeout time.Duration, adjust ...func(*graceful.Options)) *upgradeFixture {
	t.Helper()
	// Registered first, so checked last: after the successors are
	// killed and reaped.
	restartCheckLeaks(t)
	dir := t.TempDir()
	f := &upgradeFixture{path: filepath.Join(dir, "handoff.sock"), pidFile: filepath.Join(dir, "pid"), mode: "healthy"}
	opts := graceful.Options{
		Path:    f.path,
		Timeout: timeout,
		Migrate: true,
		Successor: func() (*exec.Cmd, error) {
			f.mu.Lock()
			mode := f.mode
			f.mu.Unlock()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childtest.Env+"=upgrade-gen", envPath+"="+f.path,
				envUpgradeMode+"="+mode, envPIDFile+"="+f.pidFile)
			cmd.Stdout = os.Stdout
			return cmd, nil
		},
	}
	for _, f := range adjust {
		f(&opts)
	}
	var err error
	f.p, err = graceful.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.p.Close() })
	f.ln, err = f.p.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.ln.Close() })
	go func() {
		for {
			c, err := f.ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "pid=%d\n", os.Getpid())
			c.Close()
		}
	}()
	if err := f.p.Ready(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *upgradeFixture) setMode(m string) {
	f.mu.Lock()
	f.mode = m
	f.mu.Unlock()
}

// successorPID returns the pid the last successor wrote, and kills it
// when the test ends.
func (f *upgradeFixture) successorPID(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(f.pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	return pid
}

// servedBy asks the listener which process answers.
func (f *upgradeFixture) servedBy(t *testing.T) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", f.ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("the port refuses: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(strings.TrimPrefix(line, "pid="))
}

// alive reports whether pid still runs (and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b))
	return len(fields) > 2 && fields[2] != "Z"
}

func TestUpgradeHealthy(t *testing.T) {
	f := newUpgradeFixture(t, 10*time.Second)
	if err := f.p.Upgrade(context.Background()); err != nil {
		t.Fatalf("Upgrade: %v", err)
	}
	pid := f.successorPID(t)
	select {
	case <-f.p.Exit():
	default:
		t.Error("Upgrade returned nil, and Exit has not closed")
	}
	if !f.p.HandedOff() {
		t.Error("Upgrade returned nil without a handoff")
	}
	f.ln.Close()
	if got := f.servedBy(t); got != strconv.Itoa(pid) {
		t.Errorf("served by %s, want the successor %d", got, pid)
	}
	if err := f.p.Upgrade(context.Background()); !errors.Is(err, graceful.ErrUpgrade) {
		t.Errorf("Upgrade after a takeover: %v, want ErrUpgrade", err)
	}
}

func TestUpgradeFailures(t *testing.T) {
	for _, tc := range []struct {
		mode string
		want []error
		says string // in the error
	}{
		{"exit3", []error{graceful.ErrUpgrade}, "exited with status 3 before READY: upgrade-gen: the configuration is broken"},
		{"hang", []error{graceful.ErrUpgrade, graceful.ErrTimeout}, "did not take over within"},
		{"refuse-migration", []error{graceful.ErrUpgrade, graceful.ErrRefused}, "not today"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			f := newUpgradeFixture(t, 3*time.Second)
			// A tracked connection, which must resume when the
			// migration fails.
			var peer net.Conn
			if tc.mode == "refuse-migration" {
				peer = trackedEcho(t, f.p)
			}
			f.setMode(tc.mode)
			start := time.Now()
			err := f.p.Upgrade(context.Background())
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("Upgrade: %v, want an error matching %v", err, w)
				}
			}
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("Upgrade: %v, want it to say %q", err, tc.says)
			}
			t.Logf("%s: verdict after %v: %v", tc.mode, time.Since(start).Round(time.Millisecond), err)
			if pid := f.successorPID(t); alive(pid) {
				t.Errorf("the failed successor %d still runs", pid)
			}
			if f.p.HandedOff() {
				t.Fatal("handed off on a failed upgrade")
			}
			if got := f.servedBy(t); got != strconv.Itoa(os.Getpid()) {
				t.Errorf("served by %s after a failed upgrade, want this process", got)
			}
			if peer != nil {
				echo(t, peer, "still here")
			}
			// The next upgrade works.
			f.setMode("healthy")
			if err := f.p.Upgrade(context.Background()); err != nil {
				t.Fatalf("Upgrade after a failed one: %v", err)
			}
			f.successorPID(t)
		})
	}
}

// TestUpgradeRefused: a successor the predecessor's checks refuse is a
// failed upgrade, which says so.
func TestUpgradeRefused(t *testing.T) {
	f := newUpgradeFixture(t, 10*time.Second, func(o *graceful.Options) {
		o.Authorize = func(p graceful.Peer) error {
			if p.Role == graceful.RoleSuccessor {
				return errors.New("no successors today")
			}
			return nil
		}
	})
	err := f.p.Upgrade(context.Background())
	if !errors.Is(err, graceful.ErrUpgrade) || !errors.Is(err, graceful.ErrUnauthorized) || !strings.Contains(err.Error(), "no successors today") {
		t.Errorf("Upgrade: %v, want ErrUpgrade and ErrUnauthorized with the reason", err)
	}
	if pid := f.successorPID(t); alive(pid) {
		t.Errorf("the refused successor %d still runs", pid)
	}
	if f.p.HandedOff() {
		t.Error("handed off to a refused successor")
	}
}

func TestUpgradeConcurrent(t *testing.T) {
	f := newUpgradeFixture(t, 3*time.Second)
	f.setMode("hang")
	first := make(chan error, 1)
	go func() { first <- f.p.Upgrade(context.Background()) }()
	// Wait for the first to start its successor.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(f.pidFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first upgrade started no successor")
		}
		time.Sleep(5 * time.Millisecond)
	}
	err := f.p.Upgrade(context.Background())
	if !errors.Is(err, graceful.ErrUpgrading) || !errors.Is(err, graceful.ErrUpgrade) {
		t.Errorf("second Upgrade: %v, want ErrUpgrading", err)
	}
	_, err = graceful.RequestUpgrade(context.Background(), f.path)
	if !errors.Is(err, graceful.ErrUpgrading) {
		t.Errorf("RequestUpgrade meanwhile: %v, want ErrUpgrading", err)
	}
	if err := <-first; !errors.Is(err, graceful.ErrTimeout) {
		t.Errorf("first Upgrade: %v, want ErrTimeout", err)
	}
	f.successorPID(t)
}

func TestUpgradeContext(t *testing.T) {
	f := newUpgradeFixture(t, 30*time.Second)
	f.setMode("hang")
	// Cancelled once the successor runs (it has written its pid).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		defer cancel()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if _, err := os.Stat(f.pidFile); err == nil {
				return
			}
		}
	}()
	err := f.p.Upgrade(ctx)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, graceful.ErrUpgrade) {
		t.Errorf("Upgrade: %v, want the context's error", err)
	}
	if pid := f.successorPID(t); alive(pid) {
		t.Errorf("successor %d still runs", pid)
	}
}

func TestRequestUpgrade(t *testing.T) {
	f := newUpgradeFixture(t, 10*time.Second)
	f.setMode("exit3")
	_, err := graceful.RequestUpgrade(context.Background(), f.path)
	if !errors.Is(err, graceful.ErrUpgrade) || !strings.Contains(err.Error(), "status 3") {
		t.Errorf("RequestUpgrade of a failing successor: %v, want ErrUpgrade with its status", err)
	}
	f.successorPID(t)
	f.setMode("healthy")
	pid, err := graceful.RequestUpgrade(context.Background(), f.path)
	if err != nil {
		t.Fatal(err)
	}
	if want := f.successorPID(t); pid != want {
		t.Errorf("RequestUpgrade says pid %d took over, want %d", pid, want)
	}
	<-f.p.Exit()
	f.ln.Close()
	if got := f.servedBy(t); got != strconv.Itoa(pid) {
		t.Errorf("served by %s, want %d", got, pid)
	}
	// Nothing serves a path nobody listens on.
	if _, err := graceful.RequestUpgrade(context.Background(), filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Error("RequestUpgrade of a missing socket succeeded")
	}
}

// trackedEcho makes a connection to a server in p that echoes lines on a
// tracked Conn and hands it off at a line boundary, and returns the
// client's end.
func trackedEcho(t *testing.T, p *graceful.Process) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := p.Track(sc)
	t.Cleanup(func() { c.Close() })
	go func() {
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if errors.Is(err, graceful.ErrMigrating) {
				if c.HandoffReader(nil, r, []byte(line)) {
					return
				}
				continue
			}
			if err != nil {
				return
			}
			c.Write([]byte(line))
		}
	}()
	echo(t, client, "hello")
	return client
}

func echo(t *testing.T, c net.Conn, s string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintln(c, s); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != s+"\n" {
		t.Fatalf("echo: %q, %v", line, err)
	}
}

//go:build linux

package graceful_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/internal/fdtest"
)

// The supervisor's tests run the test binary with Options.Supervise (or
// SuperviseEnv): the process the test starts is the supervisor, a child
// subreaper rather than PID 1 (which needs a PID namespace, and root: the
// examples' container tests do that). Its generations play
// roleSupervisedGen and report on the standard output they share.
const (
	envSuperviseOpt = "GT_SUPERVISE_OPT" // "1": Options.Supervise
	envExitCode     = "GT_EXIT_CODE"     // the status a generation exits with on SIGTERM
	envLinger       = "GT_LINGER"        // a file: a generation that handed over waits until it is gone
)

var _ = registerRestartRole("supervised-gen", roleSupervisedGen)

// roleSupervisedGen is a generation of a supervised service. It says
// "gen pid=... ppid=..." after New and "ready pid=..." after Ready; on
// SIGHUP it upgrades, on SIGUSR1 it says "usr1 pid=...", on SIGUSR2 it
// starts a process that outlives it ("spawned pid=..."), and on SIGTERM it
// exits with envExitCode's status. Once a successor takes over it waits
// for envLinger's file to go, if it exists, and exits 0.
func roleSupervisedGen() error {
	p, err := graceful.New(graceful.Options{Path: os.Getenv(envPath), Supervise: os.Getenv(envSuperviseOpt) == "1"})
	if err != nil {
		return err
	}
	fmt.Printf("gen pid=%d ppid=%d generation=%d\n", os.Getpid(), os.Getppid(), p.Generation())
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM)
	if err := p.Ready(); err != nil {
		return err
	}
	fmt.Printf("ready pid=%d\n", os.Getpid())
	for {
		select {
		case <-p.Exit():
			if f := os.Getenv(envLinger); f != "" {
				for {
					if _, err := os.Stat(f); err != nil {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			fmt.Printf("exit pid=%d\n", os.Getpid())
			return nil
		case s := <-sig:
			switch s {
			case syscall.SIGHUP:
				go func() {
					if err := p.Upgrade(context.Background()); err != nil {
						fmt.Printf("upgrade-failed pid=%d error=%q\n", os.Getpid(), err)
					}
				}()
			case syscall.SIGUSR1:
				fmt.Printf("usr1 pid=%d\n", os.Getpid())
			case syscall.SIGUSR2:
				cmd := exec.Command("sleep", "600")
				if err := cmd.Start(); err != nil {
					return err
				}
				fmt.Printf("spawned pid=%d\n", cmd.Process.Pid)
			case syscall.SIGTERM:
				p.Close()
				code, _ := strconv.Atoi(os.Getenv(envExitCode))
				fmt.Printf("term pid=%d\n", os.Getpid())
				os.Exit(code)
			}
		}
	}
}

// supervised is a supervisor the test started, and its generations.
type supervised struct {
	*restartChild
	t    *testing.T
	path string
	pid  int
}

func startSupervised(t *testing.T, env ...string) *supervised {
	t.Helper()
	path := filepath.Join(t.TempDir(), "handoff.sock")
	c := startRestartChild(t, "", "supervised-gen", nil, append([]string{envPath + "=" + path}, env...)...)
	return &supervised{restartChild: c, t: t, path: path, pid: c.cmd.Process.Pid}
}

// gen waits for the next generation's "gen" and "ready" lines and returns
// its pid and its parent's; it is killed when the test ends.
func (s *supervised) gen() (pid, ppid int) {
	s.t.Helper()
	l := s.expect("gen pid=")
	pid, ppid = intField(s.t, l, "pid"), intField(s.t, l, "ppid")
	s.t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if r := s.expect("ready pid="); intField(s.t, r, "pid") != pid {
		s.t.Fatalf("%q after generation %d", r, pid)
	}
	return pid, ppid
}

// signal sends sig to the supervisor.
func (s *supervised) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := syscall.Kill(s.pid, sig); err != nil {
		s.t.Fatal(err)
	}
}

// upgrade has the serving generation (through the supervisor) start its
// successor, waits until that one serves and old has been reaped, and
// returns the successor's pid.
func (s *supervised) upgrade(old int) int {
	s.t.Helper()
	s.signal(syscall.SIGHUP)
	pid, ppid := s.gen()
	if ppid != old {
		s.t.Fatalf("successor %d started by %d, want %d", pid, ppid, old)
	}
	awaitReaped(s.t, old)
	if got := parentOf(pid); got != s.pid {
		s.t.Fatalf("successor %d: parent %d once its predecessor ended, want the supervisor %d", pid, got, s.pid)
	}
	return pid
}

// forwards checks that SIGUSR1 to the supervisor reaches pid.
func (s *supervised) forwards(pid int) {
	s.t.Helper()
	s.signal(syscall.SIGUSR1)
	if l := s.expect("usr1 pid="); intField(s.t, l, "pid") != pid {
		s.t.Fatalf("SIGUSR1 reached %q, want pid %d", l, pid)
	}
}

// exitCode waits for the supervisor to exit and returns its status.
func (s *supervised) exitCode() int {
	s.t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err == nil {
			return 0
		}
		if errors.As(err, &ee) && ee.Exited() {
			return ee.ExitCode()
		}
		s.t.Fatalf("supervisor: %v", err)
	case <-time.After(30 * time.Second):
		s.t.Fatal("the supervisor did not exit")
	}
	return -1
}

// supervisorAddr returns the supervisor's address, from the environment
// of a generation.
func supervisorAddr(t *testing.T, gen int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", gen))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(b), "\x00") {
		if v, ok := strings.CutPrefix(kv, "FDPASS_SUPERVISOR="); ok {
			return v
		}
	}
	t.Fatalf("generation %d: no FDPASS_SUPERVISOR in its environment", gen)
	return ""
}

// sendReport sends msg, with oob, to the supervisor at addr.
func sendReport(t *testing.T, addr, msg string, oob []byte) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Sendmsg(fd, []byte(msg), oob, &unix.SockaddrUnix{Name: addr}, 0); err != nil {
		t.Fatalf("send %q: %v", msg, err)
	}
}

func intField(t *testing.T, line, key string) int {
	t.Helper()
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in %q", key, line)
	return 0
}

// procStat returns a process's state and parent, ok false if it does not
// exist (it has been reaped).
func procStat(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	// The command name, in parentheses, may hold spaces.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0][0], ppid, true
}

func parentOf(pid int) int {
	_, ppid, _ := procStat(pid)
	return ppid
}

// awaitReaped waits until pid no longer exists, not even as a zombie.
func awaitReaped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		state, _, ok := procStat(pid)
		if !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still exists (state %c)", pid, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// zombiesOf returns the children of ppid that are zombies.
func zombiesOf(ppid int) []int {
	var z []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if state, pp, ok := procStat(pid); ok && pp == ppid && state == 'Z' {
			z = append(z, pid)
		}
	}
	return z
}

// TestSuperviseFollowsTakeovers: the supervisor runs the first generation
// as its child, forwards signals to whichever generation serves, inherits
// and reaps what each one leaves (its successor, a process it started),
// and exits with the status of the last one.
func TestSuperviseFollowsTakeovers(t *testing.T) {
	restartCheckLeaks(t)
	s := startSupervised(t, envSuperviseOpt+"=1", envExitCode+"=7")
	gen, ppid := s.gen()
	if gen == s.pid || ppid != s.pid {
		t.Fatalf("first generation %d, parent %d; want a child of the supervisor %d", gen, ppid, s.pid)
	}
	s.forwards(gen)
	// What the supervisor holds open with one generation to watch: it
	// holds as much after each takeover, and after reports it ignores.
	fds := fdtest.CountOf(t, s.pid)
	addr := supervisorAddr(t, gen)
	// A report from a process that does not serve, naming another.
	other := exec.Command("sleep", "600")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer other.Wait()
	defer other.Process.Kill()
	sendReport(t, addr, fmt.Sprintf("serving %d %s", other.Process.Pid, s.path), nil)
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	sendReport(t, addr, "serving 1 /elsewhere", unix.UnixRights(pipe[0], pipe[1]))
	unix.Close(pipe[0])
	unix.Close(pipe[1])
	s.forwards(gen)
	fdtest.AwaitCountOf(t, s.pid, fds)

	// A process the first generation starts, orphaned when it exits.
	s.signal(syscall.SIGUSR2)
	orphan := intField(t, s.expect("spawned pid="), "pid")
	t.Cleanup(func() { syscall.Kill(orphan, syscall.SIGKILL) })

	for range 3 {
		gen = s.upgrade(gen)
		s.forwards(gen)
		if z := zombiesOf(s.pid); len(z) > 0 {
			t.Fatalf("zombies: %v", z)
		}
		fdtest.AwaitCountOf(t, s.pid, fds)
	}
	if got := parentOf(orphan); got != s.pid {
		t.Fatalf("orphan %d: parent %d, want the supervisor %d", orphan, got, s.pid)
	}
	if err := syscall.Kill(orphan, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	awaitReaped(t, orphan)

	s.signal(syscall.SIGTERM)
	if l := s.expect("term pid="); intField(t, l, "pid") != gen {
		t.Fatalf("SIGTERM reached %q, want %d", l, gen)
	}
	if code := s.exitCode(); code != 7 {
		t.Fatalf("supervisor exited with %d, want the last generation's 7", code)
	}
	awaitReaped(t, gen)
}

// TestSuperviseKilled: a generation killed by a signal ends the
// supervisor with 128 plus the signal.
func TestSuperviseKilled(t *testing.T) {
	s := startSupervised(t, envSuperviseOpt+"=1")
	gen, _ := s.gen()
	gen = s.upgrade(gen)
	if err := syscall.Kill(gen, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := s.exitCode(); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("supervisor exited with %d, want %d", code, 128+int(syscall.SIGKILL))
	}
}

// TestSuperviseWhileDraining: the generation that serves ends while its
// predecessor still drains, so that the predecessor, not the supervisor,
// collects it. The supervisor waits for the predecessor and exits with
// the status of the one that served, which the kernel keeps for its pidfd
// (Linux 6.15); on earlier kernels it cannot know it and exits with 1.
func TestSuperviseWhileDraining(t *testing.T) {
	linger := filepath.Join(t.TempDir(), "linger")
	if err := os.WriteFile(linger, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := startSupervised(t, envSuperviseOpt+"=1", envExitCode+"=7", envLinger+"="+linger)
	first, _ := s.gen()
	s.signal(syscall.SIGHUP)
	gen, ppid := s.gen()
	if ppid != first {
		t.Fatalf("successor's parent %d, want %d", ppid, first)
	}
	s.signal(syscall.SIGTERM)
	if l := s.expect("term pid="); intField(t, l, "pid") != gen {
		t.Fatalf("SIGTERM reached %q, want %d", l, gen)
	}
	awaitReaped(t, gen)
	// The predecessor drains on: the supervisor waits for it.
	time.Sleep(100 * time.Millisecond)
	if state, _, ok := procStat(s.pid); !ok || state == 'Z' {
		t.Fatal("the supervisor exited while a generation still drained")
	}
	if err := os.Remove(linger); err != nil {
		t.Fatal(err)
	}
	want := 1
	if exitInfoSupported(t) {
		want = 7
	}
	if code := s.exitCode(); code != want {
		t.Fatalf("supervisor exited with %d, want %d", code, want)
	}
	awaitReaped(t, first)
}

// exitInfoSupported reports whether a pidfd tells the status of its
// process once that is collected (PIDFD_INFO_EXIT).
func exitInfoSupported(t *testing.T) bool {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	cmd.Wait()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_EXIT}
	return unix.IoctlPidfdInfo(fd, &info) == nil && info.Mask&unix.PIDFD_INFO_EXIT != 0
}

// TestSuperviseEnv: SuperviseEnv turns the supervisor on without the
// option, and off despite it; any other value is an error.
func TestSuperviseEnv(t *testing.T) {
	t.Run("on", func(t *testing.T) {
		s := startSupervised(t, graceful.SuperviseEnv+"=1")
		if gen, ppid := s.gen(); gen == s.pid || ppid != s.pid {
			t.Fatalf("generation %d, parent %d: not supervised by %d", gen, ppid, s.pid)
		}
	})
	t.Run("off", func(t *testing.T) {
		s := startSupervised(t, envSuperviseOpt+"=1", graceful.SuperviseEnv+"=0")
		if gen, _ := s.gen(); gen != s.pid {
			t.Fatalf("generation %d: supervised, want %d itself", gen, s.pid)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		s := startSupervised(t, graceful.SuperviseEnv+"=maybe")
		if code := s.exitCode(); code != 1 {
			t.Fatalf("exit status %d, want 1 (New fails)", code)
		}
	})
}

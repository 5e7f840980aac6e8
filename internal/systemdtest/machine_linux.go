//go:build linux

package systemdtest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// EnvRequired, when set, makes Boot fail a test where it would skip it.
const EnvRequired = "FDPASS_SYSTEMDTEST_REQUIRED"

// bootTimeout bounds the boot, from the first process to a running
// system, and the wait for a stopped machine's processes to go.
const bootTimeout = 60 * time.Second

// Machine is systemd running as PID 1 of namespaces of its own (see the
// package doc). Its methods run commands in it with nsenter.
type Machine struct {
	pid    int    // the machine's PID 1, as this process sees it
	cgroup string // the cgroup made for it, a path in this process's cgroup2 mount
	cmd    *exec.Cmd
	exited chan struct{}
	log    *os.File // the first process's standard output and error
	// The write end of the pipe the watchdog reads: it closes when this
	// process ends, however it ends.
	watch   *os.File
	watcher *exec.Cmd
}

// Boot boots a machine for t and returns it running; it is stopped and
// cleaned up when t ends. Boot skips t when the process is not root or
// systemd, nsenter or a cgroup2 mount is missing (fails it instead if
// EnvRequired is set), and fails t if the machine does not boot.
func Boot(t testing.TB) *Machine {
	t.Helper()
	// CI sets EnvRequired: there a missing piece fails the test.
	skip := t.Skipf
	if os.Getenv(EnvRequired) != "" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("systemdtest: booting systemd needs root (CI runs as root)")
	}
	if _, err := os.Stat(systemdPath); err != nil {
		skip("systemdtest: no systemd (Debian package systemd): %v", err)
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		skip("systemdtest: no nsenter (package util-linux): %v", err)
	}
	parent, err := ownCgroup()
	if err != nil {
		skip("systemdtest: no cgroup2 hierarchy to give the machine: %v", err)
	}
	var suffix [6]byte
	rand.Read(suffix[:])
	m := &Machine{cgroup: filepath.Join(parent, "fdpass-systemdtest-"+hex.EncodeToString(suffix[:])), exited: make(chan struct{})}
	if err := os.Mkdir(m.cgroup, 0o755); err != nil {
		skip("systemdtest: cannot make a cgroup for the machine: %v", err)
	}
	t.Cleanup(func() { m.stop(t) })
	cg, err := os.Open(m.cgroup)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	// The root is built on a directory of this test's; the machine mounts
	// a tmpfs on it in its own mount namespace, so here it stays empty.
	base := t.TempDir()
	if m.log, err = os.Create(filepath.Join(t.TempDir(), "machine.log")); err != nil {
		t.Fatal(err)
	}
	// The watchdog, a process of its own in a session of its own, kills
	// the machine and removes its cgroup when this process ends without
	// having stopped it (a test binary that panics at its timeout runs no
	// clean-up). The parent-death signal below does not make that sure:
	// it may be lost when the machine is killed while it boots.
	if err := m.startWatchdog(); err != nil {
		t.Fatalf("systemdtest: start the watchdog: %v", err)
	}
	m.cmd = exec.Command(os.Args[0], "-test.run=^$")
	m.cmd.Env = append(os.Environ(), envBoot+"="+base)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	m.cmd.SysProcAttr = &syscall.SysProcAttr{
		// PID 1 of a new PID namespace, born in the machine's cgroup,
		// which its cgroup namespace then takes as its root. Go makes the
		// new mount namespace private (MS_REC|MS_PRIVATE on /) before
		// the first process runs.
		Cloneflags:   syscall.CLONE_NEWPID,
		Unshareflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWCGROUP | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
		UseCgroupFD:  true,
		CgroupFD:     int(cg.Fd()),
		// Should this process die, the machine dies with it.
		Pdeathsig: syscall.SIGKILL,
	}
	// The parent-death signal comes when the thread that started the
	// machine ends, not the process: start it on a thread of its own that
	// lasts until the machine has exited (or the process ends).
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread ends with this goroutine, once the
		// machine has gone.
		if err := m.cmd.Start(); err != nil {
			started <- err
			close(m.exited)
			return
		}
		started <- nil
		m.cmd.Wait()
		close(m.exited)
	}()
	if err := <-started; err != nil {
		m.cmd = nil
		t.Fatalf("systemdtest: start the machine: %v", err)
	}
	m.pid = m.cmd.Process.Pid
	deadline := time.Now().Add(bootTimeout)
	for {
		out, err := m.Command("systemctl", "is-system-running").Output()
		state := strings.TrimSpace(string(out))
		if state == "running" || state == "degraded" {
			if state == "degraded" {
				failed, _ := m.Command("systemctl", "--failed", "--no-pager").CombinedOutput()
				t.Logf("systemdtest: the machine runs degraded:\n%s", failed)
			}
			break
		}
		select {
		case <-m.exited:
			t.Fatalf("systemdtest: the machine ended while booting (%v):\n%s", m.cmd.ProcessState, m.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemdtest: not running within %v (%q, %v):\n%s", bootTimeout, state, err, m.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return m
}

// ownCgroup returns the directory of this process's cgroup in the cgroup2
// hierarchy.
func ownCgroup() (string, error) {
	mnt := ""
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer mi.Close()
	sc := bufio.NewScanner(mi)
	for sc.Scan() {
		// ID parent major:minor root mountpoint options ... - fstype source options
		f := strings.Fields(sc.Text())
		for i, w := range f {
			if w == "-" && i+1 < len(f) && f[i+1] == "cgroup2" && len(f) > 4 && f[3] == "/" {
				mnt = f[4]
			}
		}
		if mnt != "" {
			break
		}
	}
	if mnt == "" {
		return "", errors.New("no cgroup2 mount")
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return filepath.Join(mnt, p), nil
		}
	}
	return "", errors.New("no cgroup2 entry in /proc/self/cgroup")
}

// PID returns the machine's PID 1 as this process sees it.
func (m *Machine) PID() int { return m.pid }

// Command returns a command that runs name with args in the machine (all
// its namespaces, its root and working directory), with nsenter.
func (m *Machine) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"-t", strconv.Itoa(m.pid), "-a", "--", name}, args...)...)
}

// Run runs name with args in the machine and returns what it wrote to
// standard output and error; an error that it failed carries both.
func (m *Machine) Run(name string, args ...string) (string, error) {
	out, err := m.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Systemctl runs systemctl with args in the machine and fails t if it
// fails.
func (m *Machine) Systemctl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := m.Run("systemctl", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Show returns the value of unit's property prop (systemctl show).
func (m *Machine) Show(t testing.TB, unit, prop string) string {
	t.Helper()
	return strings.TrimSpace(m.Systemctl(t, "show", "--value", "-p", prop, unit))
}

// MainPID returns unit's main process as the machine numbers it; 0 if it
// has none.
func (m *Machine) MainPID(t testing.TB, unit string) int {
	t.Helper()
	v := m.Show(t, unit, "MainPID")
	pid, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("MainPID of %s: %q", unit, v)
	}
	return pid
}

// Version returns systemd's version number (252 for "systemd 252
// (252.38-1~deb12u1)").
func (m *Machine) Version(t testing.TB) int {
	t.Helper()
	out := m.Systemctl(t, "--version")
	v := regexp.MustCompile(`^systemd (\d+)`).FindStringSubmatch(out)
	if v == nil {
		t.Fatalf("systemctl --version: %q", out)
	}
	n, _ := strconv.Atoi(v[1])
	return n
}

// Journal returns the machine's journal, of unit only if unit is not
// empty.
func (m *Machine) Journal(unit string) string {
	args := []string{"--no-pager", "-o", "short-monotonic"}
	if unit != "" {
		args = append(args, "-u", unit)
	}
	out, err := m.Run("journalctl", args...)
	if err != nil {
		return err.Error()
	}
	return out
}

// WriteFile writes a file in the machine's file system (in memory: the
// host's does not change), making its directory if needed.
func (m *Machine) WriteFile(name string, data []byte, perm os.FileMode) error {
	p := filepath.Join("/proc", strconv.Itoa(m.pid), "root", name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	// A new file renamed into place, as a package manager installs one:
	// a process that runs the old file keeps it.
	tmp := p + ".new"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	if err := os.Chmod(tmp, perm); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// Log returns what the machine's first process and systemd wrote to
// standard output and error.
func (m *Machine) Log() string {
	b, _ := os.ReadFile(m.log.Name())
	return string(b)
}

// stop kills the machine's PID 1, which ends every process in the
// machine, waits until its cgroups are empty and removes them. When t has
// failed it logs the machine's journal first.
func (m *Machine) stop(t testing.TB) {
	if m.cmd != nil && m.cmd.Process != nil {
		if t.Failed() && !m.ended() {
			t.Logf("systemdtest: the machine's journal:\n%s", m.Journal(""))
		}
		m.cmd.Process.Signal(syscall.SIGKILL)
		<-m.exited
	}
	if m.log != nil {
		m.log.Close()
	}
	deadline := time.Now().Add(bootTimeout)
	for {
		b, err := os.ReadFile(filepath.Join(m.cgroup, "cgroup.events"))
		if err != nil || bytes.Contains(b, []byte("populated 0")) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("systemdtest: processes left in %s after %v", m.cgroup, bootTimeout)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := removeCgroups(m.cgroup); err != nil {
		t.Errorf("systemdtest: %v", err)
	}
	// The watchdog finds nothing left to do and exits.
	if m.watch != nil {
		m.watch.Close()
		if err := m.watcher.Wait(); err != nil {
			t.Errorf("systemdtest: the watchdog: %v", err)
		}
	}
}

// startWatchdog starts the watchdog of m's cgroup (see Main).
func (m *Machine) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	m.watcher = exec.Command(os.Args[0], "-test.run=^$")
	m.watcher.Env = append(os.Environ(), envWatch+"="+m.cgroup)
	m.watcher.ExtraFiles = []*os.File{r}
	m.watcher.Stderr = os.Stderr
	// Out of this process's session and process group: a ^C or a kill of
	// the group does not end it before the machine.
	m.watcher.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := m.watcher.Start(); err != nil {
		w.Close()
		return err
	}
	m.watch = w
	return nil
}

// envWatch, set in the watchdog, names the cgroup it watches over.
const envWatch = "FDPASS_SYSTEMDTEST_WATCH"

// watchdog waits until every process holding the pipe's write end (the
// test process) has closed it or ended, then kills what is left in
// cgroup and removes it.
func watchdog(cgroup string) error {
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGQUIT)
	pipe := os.NewFile(3, "watch")
	io.Copy(io.Discard, pipe)
	if err := emptyCgroup(cgroup); err != nil {
		return err
	}
	return removeCgroups(cgroup)
}

func (m *Machine) ended() bool {
	select {
	case <-m.exited:
		return true
	default:
		return false
	}
}

// emptyCgroup kills every process in dir and below (cgroup.kill, Linux
// 5.14 and later) and waits until none is left.
func emptyCgroup(dir string) error {
	events := filepath.Join(dir, "cgroup.events")
	deadline := time.Now().Add(bootTimeout)
	for killed := false; ; {
		b, err := os.ReadFile(events)
		if errors.Is(err, os.ErrNotExist) || err == nil && bytes.Contains(b, []byte("populated 0")) {
			return nil
		}
		if err != nil {
			return err
		}
		if !killed {
			if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
				return fmt.Errorf("processes left in %s: %w", dir, err)
			}
			killed = true
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes left in %s after %v", dir, bootTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// removeCgroups removes the cgroup dir and those below it, deepest first.
func removeCgroups(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := removeCgroups(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return os.NewSyscallError("rmdir "+dir, err)
	}
	return nil
}

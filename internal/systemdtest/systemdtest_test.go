//go:build linux

package systemdtest_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/internal/systemdtest"
)

func TestMain(m *testing.M) {
	systemdtest.Main()
	os.Exit(m.Run())
}

// TestMachine boots a machine and looks at it from inside: systemd is its
// PID 1 and runs a service systemctl starts; /tmp and /run are its own
// (a file on each side is not seen on the other); /proc/sys is read-only.
// Once the test is over, no process of it is left, nor its cgroup.
func TestMachine(t *testing.T) {
	var pid int
	var cgroup string
	marker := filepath.Join(os.TempDir(), "fdpass-systemdtest-host-marker")
	if err := os.WriteFile(marker, []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(marker)
	t.Run("inside", func(t *testing.T) {
		m := systemdtest.Boot(t)
		pid, cgroup = m.PID(), m.Cgroup()
		if comm, err := m.Run("cat", "/proc/1/comm"); err != nil || strings.TrimSpace(comm) != "systemd" {
			t.Errorf("PID 1 of the machine: %q, %v", comm, err)
		}
		if _, err := m.Run("test", "-e", marker); err == nil {
			t.Errorf("the machine sees the host's %s", marker)
		}
		if _, err := m.Run("sh", "-c", "echo machine > /tmp/fdpass-systemdtest-machine-marker && echo x > /run/fdpass-systemdtest-machine-marker"); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"/tmp/fdpass-systemdtest-machine-marker", "/run/fdpass-systemdtest-machine-marker"} {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the host sees the machine's %s: %v", p, err)
			}
		}
		if _, err := m.Run("sh", "-c", "echo 1 > /proc/sys/kernel/sysrq"); err == nil {
			t.Errorf("the machine wrote to /proc/sys")
		}
		unit := "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'cat /proc/self/cgroup > /run/probe'\n"
		if err := m.WriteFile("/etc/systemd/system/fdpass-probe.service", []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		m.Systemctl(t, "daemon-reload")
		m.Systemctl(t, "start", "fdpass-probe.service")
		if out, err := m.Run("cat", "/run/probe"); err != nil || !strings.Contains("\n"+out, "\n0::/system.slice/fdpass-probe.service\n") {
			t.Errorf("the service ran in %q, %v", out, err)
		}
		if m.Version(t) < 200 {
			t.Errorf("systemd version %d", m.Version(t))
		}
	})
	if pid == 0 {
		return
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the machine's PID 1 (%d) is still there: %v", pid, err)
	}
	if _, err := os.Stat(cgroup); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the machine's cgroup %s is still there: %v", cgroup, err)
	}
}

// envRole makes TestMachineEnds, run again as a child, play a test that
// boots a machine and then fails ("fail") or is killed ("kill").
const envRole = "FDPASS_SYSTEMDTEST_TEST_ROLE"

// TestMachineEnds: a test that fails, and a test process killed with
// SIGKILL before any clean-up runs, leave no machine behind: no process
// of it (its mount namespace, overlay, tmpfs and all, goes with the last
// one), no cgroup, no mount on the host.
func TestMachineEnds(t *testing.T) {
	switch os.Getenv(envRole) {
	case "":
	case "fail":
		m := systemdtest.Boot(t)
		fmt.Printf("machine %d %s\n", m.PID(), m.Cgroup())
		t.Fatal("failing on purpose, with a machine running")
	case "kill":
		m := systemdtest.Boot(t)
		fmt.Printf("machine %d %s\n", m.PID(), m.Cgroup())
		select {} // until killed
	default:
		t.Fatalf("%s=%q", envRole, os.Getenv(envRole))
	}
	mounts := hostMounts(t)
	for _, role := range []string{"fail", "kill"} {
		t.Run(role, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestMachineEnds$", "-test.count=1")
			// What the child's own clean-up cannot remove when killed
			// stays in this test's temporary directory.
			cmd.Env = append(os.Environ(), envRole+"="+role, "TMPDIR="+t.TempDir())
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(out)
			pid, cgroup := 0, ""
			var lines []string
			for pid == 0 && sc.Scan() {
				lines = append(lines, sc.Text())
				fmt.Sscanf(sc.Text(), "machine %d %s", &pid, &cgroup)
			}
			if pid == 0 {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("the child booted no machine: %q", lines)
			}
			if role == "kill" {
				if err := cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
			}
			go io.Copy(io.Discard, out)
			err = cmd.Wait()
			if err == nil {
				t.Fatalf("the child test passed")
			}
			t.Logf("child test (%s): %v; its machine's PID 1 was %d", role, err, pid)
			// The parent-death signal is asynchronous: wait for it.
			deadline := time.Now().Add(30 * time.Second)
			for alive(pid) {
				if time.Now().After(deadline) {
					t.Fatalf("the machine's PID 1 (%d) outlived its test process by 30s", pid)
				}
				time.Sleep(10 * time.Millisecond)
			}
			deadline = time.Now().Add(30 * time.Second)
			for {
				_, err := os.Stat(cgroup)
				if errors.Is(err, os.ErrNotExist) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the machine's cgroup %s is still there: %v", cgroup, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	if got := hostMounts(t); got != mounts {
		t.Errorf("the host's mounts changed:\nbefore:\n%s\nafter:\n%s", mounts, got)
	}
}

// hostMounts returns this process's mount table: mount points and file
// system types.
func hostMounts(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var s strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// ID parent major:minor root mountpoint options ... - fstype source options
		f := strings.Fields(l)
		fstype := ""
		for i, w := range f {
			if w == "-" && i+1 < len(f) {
				fstype = f[i+1]
			}
		}
		if len(f) > 4 {
			fmt.Fprintf(&s, "%s %s\n", f[4], fstype)
		}
	}
	return s.String()
}

// alive reports whether process pid runs: it exists and is not a zombie
// (an init that does not reap may leave the machine's PID 1 one).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...
	_, after, ok := strings.Cut(string(b), ") ")
	return ok && !strings.HasPrefix(after, "Z")
}

//go:build linux

package systemdtest_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

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

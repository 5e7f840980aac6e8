//go:build !linux

package systemdtest

import (
	"os"
	"os/exec"
	"testing"
)

// EnvRequired, when set, makes Boot fail a test where it would skip it.
const EnvRequired = "FDPASS_SYSTEMDTEST_REQUIRED"

// Main does nothing: machines boot on Linux only.
func Main() {}

// Machine is systemd running as PID 1 of namespaces of its own; Linux only.
type Machine struct{}

// Boot skips t: machines boot on Linux only.
func Boot(t testing.TB) *Machine {
	t.Helper()
	if os.Getenv(EnvRequired) != "" {
		t.Fatal("systemdtest: Linux only")
	}
	t.Skip("systemdtest: Linux only")
	return nil
}

// The methods of a Machine, which Boot never returns here.

func (m *Machine) PID() int                                      { return 0 }
func (m *Machine) Command(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }
func (m *Machine) Run(name string, args ...string) (string, error) {
	return "", os.ErrInvalid
}
func (m *Machine) Systemctl(t testing.TB, args ...string) string { return "" }
func (m *Machine) Show(t testing.TB, unit, prop string) string   { return "" }
func (m *Machine) MainPID(t testing.TB, unit string) int         { return 0 }
func (m *Machine) Version(t testing.TB) int                      { return 0 }
func (m *Machine) Journal(unit string) string                    { return "" }
func (m *Machine) WriteFile(name string, data []byte, perm os.FileMode) error {
	return os.ErrInvalid
}
func (m *Machine) Log() string { return "" }

//go:build linux

package systemdtest

// Cgroup returns the cgroup made for the machine.
func (m *Machine) Cgroup() string { return m.cgroup }

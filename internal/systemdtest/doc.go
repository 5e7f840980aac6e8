// Package systemdtest boots the real systemd as PID 1 of a machine of its
// own, for tests that drive it with systemctl: the examples' units are
// installed in it and started, reloaded, killed and restarted as an
// operator would.
//
// The machine is not a virtual machine but a set of namespaces on this
// kernel: fresh PID, mount, cgroup, UTS and IPC namespaces; a copy-on-write
// overlay of / (what the machine writes stays in memory and goes with it);
// its own /proc, a read-only sysfs, a cgroup2 mount (nsdelegate) rooted in
// a cgroup made for it, a small /dev and private tmpfs /run and /tmp. The
// host's network is shared, so a service in the machine listens on the
// host's loopback where the test's clients reach it. systemd boots into a
// target with no dependencies, and the units that would change the host
// (sysctl, kernel modules, binfmt, the clock) or clean file systems up
// (tmpfiles) are masked; /proc/sys is read-only besides.
//
// It never shares the host's /run or /tmp with the machine: systemd's
// clean-up would empty them.
//
// A test binary that boots machines calls Main first thing in TestMain
// (the machine's first process is that binary again, which sets the
// namespaces up and becomes systemd), then Boot in each test:
//
//	func TestMain(m *testing.M) {
//		systemdtest.Main()
//		os.Exit(m.Run())
//	}
//
//	func TestUnit(t *testing.T) {
//		m := systemdtest.Boot(t) // skips unless root with systemd installed
//		m.WriteFile("/etc/systemd/system/x.service", unit, 0o644)
//		m.Systemctl(t, "daemon-reload")
//		...
//	}
//
// Boot skips the test, with the reason, when the process is not root or
// systemd (/lib/systemd/systemd, Debian's package systemd), nsenter or a
// cgroup2 mount is missing; with FDPASS_SYSTEMDTEST_REQUIRED set, as CI
// sets it, it fails the test instead.
//
// Everything a machine mounted and every process it ran are gone when the
// test ends, whether it passed or failed: the machine's PID 1 is killed,
// which ends every process in its PID namespace, its mounts go with its
// mount namespace, and the cgroups it made are removed. Nothing is ever
// mounted in the host's mount namespace. Should the test process end
// without its clean-up (killed, or at its -timeout), a watchdog process
// started with the machine kills every process in the machine's cgroup
// and removes it.
//
// Linux only; elsewhere Boot skips.
package systemdtest

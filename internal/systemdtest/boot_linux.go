//go:build linux

package systemdtest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// envBoot, set in the machine's first process, names the directory on
// which it builds the machine's root.
const envBoot = "FDPASS_SYSTEMDTEST_BOOT"

// systemdPath is where Debian's package systemd installs the manager.
const systemdPath = "/lib/systemd/systemd"

// defaultTarget is the target the machine boots into: the journal and
// nothing else.
const defaultTarget = "fdpass-systemdtest.target"

// masked are units that would reach out of the machine (sysctl and
// binfmt settings are the host kernel's, so are modules and the clock),
// clean file systems up, or only cost time here. Each is linked to
// /dev/null in the machine's /etc/systemd/system.
var masked = []string{
	"systemd-sysctl.service",
	"systemd-modules-load.service",
	"kmod-static-nodes.service",
	"modprobe@.service",
	"systemd-binfmt.service",
	"proc-sys-fs-binfmt_misc.automount",
	"proc-sys-fs-binfmt_misc.mount",
	"systemd-timesyncd.service",
	"systemd-tmpfiles-setup.service",
	"systemd-tmpfiles-setup-dev.service",
	"systemd-tmpfiles-clean.service",
	"systemd-tmpfiles-clean.timer",
	"systemd-sysusers.service",
	"systemd-update-utmp.service",
	"systemd-update-utmp-runlevel.service",
	"systemd-random-seed.service",
	"systemd-machine-id-commit.service",
	"systemd-firstboot.service",
	"systemd-hwdb-update.service",
	"systemd-journal-catalog-update.service",
	"systemd-journal-flush.service",
	"systemd-update-done.service",
	"systemd-remount-fs.service",
	"systemd-udevd.service",
	"systemd-udev-trigger.service",
	"systemd-udev-settle.service",
	"systemd-pstore.service",
	"systemd-boot-update.service",
	"ldconfig.service",
	"dev-hugepages.mount",
	"dev-mqueue.mount",
	"sys-kernel-config.mount",
	"sys-kernel-debug.mount",
	"sys-kernel-tracing.mount",
	"sys-fs-fuse-connections.mount",
	"systemd-ask-password-console.path",
	"systemd-ask-password-wall.path",
	"e2scrub_reap.service",
}

// Main runs the machine's first process, or a machine's watchdog, when
// this is one, and returns otherwise. Call it first thing in TestMain.
func Main() {
	if cgroup, ok := os.LookupEnv(envWatch); ok {
		if err := watchdog(cgroup); err != nil {
			fmt.Fprintf(os.Stderr, "systemdtest: watchdog: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	base, ok := os.LookupEnv(envBoot)
	if !ok {
		return
	}
	err := boot(base)
	// boot returns only on failure.
	fmt.Fprintf(os.Stderr, "systemdtest: boot: %v\n", err)
	os.Exit(1)
}

// boot runs in the machine's first process, PID 1 of its PID namespace,
// created in its own mount, cgroup, UTS and IPC namespaces (the mount
// namespace private from the start: nothing mounted here reaches the
// host). It builds the machine's root on base and becomes systemd.
func boot(base string) error {
	if err := unix.Sethostname([]byte("fdpass-systemdtest")); err != nil {
		return os.NewSyscallError("sethostname", err)
	}
	// What the machine writes goes to memory: an overlay with / below and
	// a tmpfs above (on a file system of its own, as overlayfs wants the
	// upper layer outside the lower one).
	if err := mount("fdpass-systemdtest", base, "tmpfs", 0, "mode=0755"); err != nil {
		return err
	}
	upper, work, root := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "root")
	for _, d := range []string{upper, work, root} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	if err := mount("overlay", root, "overlay", 0, "lowerdir=/,upperdir="+upper+",workdir="+work); err != nil {
		return err
	}
	in := func(p string) string { return filepath.Join(root, p) }
	const (
		nosuid = unix.MS_NOSUID
		nodev  = unix.MS_NODEV
		noexec = unix.MS_NOEXEC
	)
	steps := []struct {
		source, target, fstype string
		flags                  uintptr
		data                   string
	}{
		{"proc", "/proc", "proc", nosuid | nodev | noexec, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_RDONLY | nosuid | nodev | noexec, ""},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid | nodev | noexec, "nsdelegate"},
		{"dev", "/dev", "tmpfs", nosuid, "mode=0755,size=4m"},
		{"run", "/run", "tmpfs", nosuid | nodev, "mode=0755,size=64m"},
		{"tmp", "/tmp", "tmpfs", nosuid | nodev, "mode=1777,size=64m"},
	}
	for _, s := range steps {
		if err := mount(s.source, in(s.target), s.fstype, s.flags, s.data); err != nil {
			return err
		}
	}
	// The kernel's settings are the host's: read-only here.
	for _, p := range []string{"/proc/sys", "/proc/sysrq-trigger"} {
		if _, err := os.Stat(in(p)); errors.Is(err, os.ErrNotExist) {
			continue // a kernel without magic SysRq
		}
		if err := mount(in(p), in(p), "", unix.MS_BIND, ""); err != nil {
			return err
		}
		if err := mount("", in(p), "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|nosuid|nodev|noexec, ""); err != nil {
			return err
		}
	}
	// A small /dev: the usual character devices, bound from the host's,
	// a devpts instance of its own and /dev/shm.
	for _, d := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		if err := os.WriteFile(in("/dev/"+d), nil, 0o666); err != nil {
			return err
		}
		if err := mount("/dev/"+d, in("/dev/"+d), "", unix.MS_BIND, ""); err != nil {
			return err
		}
	}
	for _, d := range []string{"/dev/pts", "/dev/shm"} {
		if err := os.Mkdir(in(d), 0o755); err != nil {
			return err
		}
	}
	if err := mount("devpts", in("/dev/pts"), "devpts", nosuid|noexec, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return err
	}
	if err := os.Symlink("pts/ptmx", in("/dev/ptmx")); err != nil {
		return err
	}
	if err := mount("shm", in("/dev/shm"), "tmpfs", nosuid|nodev, "mode=1777,size=16m"); err != nil {
		return err
	}
	for _, l := range [][2]string{{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"}, {"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"}} {
		if err := os.Symlink(l[0], in(l[1])); err != nil {
			return err
		}
	}
	if err := configure(root); err != nil {
		return err
	}
	// The overlay becomes /; the host's root is detached from the
	// machine's view.
	if err := os.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return os.NewSyscallError("pivot_root", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return os.NewSyscallError("umount", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	env := []string{
		"container=fdpass-systemdtest",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	}
	args := []string{systemdPath, "--unit=" + defaultTarget, "--log-target=journal", "--show-status=no"}
	return os.NewSyscallError("execve "+systemdPath, unix.Exec(systemdPath, args, env))
}

// configure writes the default target and the masks into the machine's
// /etc/systemd, under root.
func configure(root string) error {
	dir := filepath.Join(root, "/etc/systemd/system")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// The journal, so that systemd's messages and the services' output
	// can be read (journalctl) when a test fails.
	target := "[Unit]\nDescription=fdpass test machine\nWants=systemd-journald.service\nAfter=systemd-journald.service\nAllowIsolate=yes\n"
	if err := os.WriteFile(filepath.Join(dir, defaultTarget), []byte(target), 0o644); err != nil {
		return err
	}
	for _, u := range masked {
		if err := maskAt(dir, u); err != nil {
			return err
		}
	}
	// Generators turn /etc/fstab, init scripts and the like into units,
	// which a machine of this kind does not use; each run of them, at
	// boot and at every daemon-reload, costs seconds on a busy machine.
	// A generator of the same name in /etc linked to /dev/null masks one.
	gens := filepath.Join(root, "/etc/systemd/system-generators")
	if err := os.MkdirAll(gens, 0o755); err != nil {
		return err
	}
	for _, from := range []string{"/lib/systemd/system-generators", "/usr/lib/systemd/system-generators"} {
		ents, _ := os.ReadDir(filepath.Join(root, from))
		for _, e := range ents {
			if err := maskAt(gens, e.Name()); err != nil {
				return err
			}
		}
	}
	return nil
}

// maskAt links dir/name to /dev/null.
func maskAt(dir, name string) error {
	p := filepath.Join(dir, name)
	os.Remove(p)
	return os.Symlink("/dev/null", p)
}

func mount(source, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s (%s): %w", source, target, fstype, err)
	}
	return nil
}

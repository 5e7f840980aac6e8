//go:build linux

package fdtable

import "golang.org/x/sys/unix"

// Min is the number of descriptors below which Reserve does nothing: the
// table grows at most once for them.
const Min = 64

// Reserve grows the process's descriptor table, if it is smaller, so that
// n more descriptors fit above the lowest free number, with some room to
// spare, in one step: it duplicates fd onto a number that high and closes
// the duplicate. fd is any open descriptor; it is not affected. Nothing
// happens for fewer than Min descriptors; the table never grows beyond
// RLIMIT_NOFILE.
func Reserve(fd, n int) {
	if n < Min {
		return
	}
	lo, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return
	}
	// The descriptors take the lowest free numbers, holes first: lo+n is
	// where they end at most if no number above lo is in use. The spare
	// room covers numbers in use above lo and what the receiver makes
	// beside them (converting sockets duplicates them).
	want := lo + n + n/8 + Min
	hi, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, want)
	if err == unix.EINVAL {
		// Beyond RLIMIT_NOFILE: as far as it allows.
		var lim unix.Rlimit
		if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil && lim.Cur > uint64(lo+n) && lim.Cur < uint64(want) {
			hi, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, int(lim.Cur-1))
		}
	}
	if err == nil {
		unix.Close(hi)
	}
	unix.Close(lo)
}

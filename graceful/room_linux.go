package graceful

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// descriptorRoom returns how many more descriptors this process may open
// under its RLIMIT_NOFILE, less a margin for its own work (64 and a
// sixteenth of the limit); ok is false where it cannot tell.
func descriptorRoom() (room int, ok bool) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur == unix.RLIM_INFINITY {
		return 0, false
	}
	open, err := countOpen("self")
	if outOfDescriptors(err) {
		return 0, true // no room for the directory itself
	}
	if err != nil {
		return 0, false
	}
	// The directory's own descriptor is among them, and closed now.
	limit := int(min(lim.Cur, 1<<30))
	return limit - (open - 1) - 64 - limit/16, true
}

// openDescriptors returns how many descriptors process pid has open; ok
// is false where this process may not look (another user's process,
// another PID namespace's).
func openDescriptors(pid int) (n int, ok bool) {
	n, err := countOpen(strconv.Itoa(pid))
	return n, err == nil
}

// countOpen counts the entries of /proc/<proc>/fd.
func countOpen(proc string) (int, error) {
	d, err := os.Open("/proc/" + proc + "/fd")
	if err != nil {
		return 0, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	return len(names), err
}

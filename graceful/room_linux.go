package graceful

import (
	"os"

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
	d, err := os.Open("/proc/self/fd")
	if outOfDescriptors(err) {
		return 0, true // no room for the directory itself
	}
	if err != nil {
		return 0, false
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return 0, false
	}
	// The directory's own descriptor is among them, and closed now.
	limit := int(min(lim.Cur, 1<<30))
	return limit - (len(names) - 1) - 64 - limit/16, true
}

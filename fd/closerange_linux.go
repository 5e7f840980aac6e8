//go:build linux

package fd

import "golang.org/x/sys/unix"

// closeRange wraps close_range(2), falling back to one close(2) each on
// kernels older than 5.9.
func closeRange(first, last int) error {
	if err := unix.CloseRange(uint(first), uint(last), 0); err == nil {
		return nil
	}
	return closeEach(first, last)
}

//go:build !linux

package graceful

// descriptorRoom cannot tell here.
func descriptorRoom() (room int, ok bool) { return 0, false }

// openDescriptors cannot tell here.
func openDescriptors(pid int) (n int, ok bool) { return 0, false }

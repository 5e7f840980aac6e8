//go:build !linux

package fdtable

// Min is the number of descriptors below which Reserve does nothing.
const Min = 64

// Reserve does nothing here.
func Reserve(fd, n int) {}

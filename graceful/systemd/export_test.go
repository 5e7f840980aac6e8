//go:build linux

package systemd

// NewSet makes a Set of fds (which it owns from now on), named names, as
// Activation does with what systemd passed; tests use it in-process, where
// descriptors 3 and up belong to the runtime.
func NewSet(fds []int, names []string) (*Set, error) { return newSet(fds, names) }

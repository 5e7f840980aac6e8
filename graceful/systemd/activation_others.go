//go:build !linux

package systemd

// supported reports whether this platform speaks systemd's protocols.
const supported = false

func closeOnExec(int) error { return ErrUnsupported }

func describe(int) (Descriptor, error) { return Descriptor{}, ErrUnsupported }

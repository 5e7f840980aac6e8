//go:build !linux

package fd

func closeRange(first, last int) error { return closeEach(first, last) }

//go:build !linux

package systemd

func send(string, string, []int) error { return ErrUnsupported }

func monotonicUsec() uint64 { return 0 }

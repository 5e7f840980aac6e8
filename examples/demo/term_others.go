//go:build !linux

package main

import "os"

// isTerminal reports whether f is a character device, which a terminal
// is (so is /dev/null: the demo's progress line goes there unseen).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

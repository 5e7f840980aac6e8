//go:build !linux

// Command filepass needs Linux (memfd_create); see main.go.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "filepass: Linux only (it keeps its state in a memfd)")
	os.Exit(1)
}

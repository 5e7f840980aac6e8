package main

import (
	"os/exec"
	"testing"
	"time"
)

// TestTakeoversUnderLoad runs the demo end to end: the httpserver example
// built and run as separate processes, strict keep-alive and
// one-request-per-connection clients, ten takeovers and one rollback. run
// fails if any request fails, a takeover does not happen or an instance
// serves nothing.
func TestTakeoversUnderLoad(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go command to build the example")
	}
	if err := run(10, 400*time.Millisecond, 16, 8); err != nil {
		t.Fatal(err)
	}
}

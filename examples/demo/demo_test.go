package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestTakeoversUnderLoad runs the demo end to end: the httpserver example
// built and run as separate processes, strict keep-alive and
// one-request-per-connection clients, ten takeovers and one rollback. run
// fails if any request fails, a takeover does not happen or moves no
// connection, or the failing successor does not fail as intended; the
// report must also show every keep-alive connection migrating at every
// takeover, and its output must be plain lines.
func TestTakeoversUnderLoad(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatal("needs the go command to build the example")
	}
	const takeovers, keepAlive = 10, 16
	var out bytes.Buffer
	rep, err := run(config{takeovers: takeovers, interval: 400 * time.Millisecond, keepAlive: keepAlive, oneShot: 8, out: &out})
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 0 || rep.OK == 0 {
		t.Errorf("%d requests answered, %d failed", rep.OK, rep.Failed)
	}
	if len(rep.Takeovers) != takeovers || rep.Rollbacks != 1 {
		t.Errorf("%d takeovers and %d rollbacks, want %d and 1", len(rep.Takeovers), rep.Rollbacks, takeovers)
	}
	// Nothing in the server keeps a connection busy: every keep-alive
	// connection migrates at every takeover, none is redialled.
	for i, st := range rep.Takeovers {
		if st.Migrated != keepAlive || st.Redialled != 0 {
			t.Errorf("takeover %d: %d connections migrated, %d redialled; want %d and 0", i+1, st.Migrated, st.Redialled, keepAlive)
		}
		if st.Slowest.Duration <= 0 || st.Slowest.Err != nil {
			t.Errorf("takeover %d: slowest request %v", i+1, st.Slowest)
		}
	}
	if rep.Migrated != keepAlive*takeovers || rep.Redialled != 0 {
		t.Errorf("%d connections migrated, %d redialled; want %d and 0", rep.Migrated, rep.Redialled, keepAlive*takeovers)
	}
	text := out.String()
	for _, want := range []string{fmt.Sprintf("migrated            %d ", keepAlive*takeovers), "redialled           0", "rollbacks           1", "slowest request", "exited with status 3 before READY"} {
		if !strings.Contains(text, want) {
			t.Errorf("the output has no %q", want)
		}
	}
	if strings.ContainsAny(text, "\r\x1b") {
		t.Errorf("the output to a buffer has terminal control characters: %q", text)
	}
}

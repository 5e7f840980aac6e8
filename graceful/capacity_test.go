//go:build linux

package graceful_test

import (
	"bufio"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envNoFile, if set, is the soft RLIMIT_NOFILE a migbench generation
// lowers its own to.
const envNoFile = "GT_NOFILE"

// lowerNoFile sets this process's soft RLIMIT_NOFILE to s.
func lowerNoFile(s string) error {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return err
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	lim.Cur = n
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

// TestMigrateUnderDescriptorLimit: a successor whose descriptor limit
// cannot hold the predecessor's 600 connections says how many it takes
// (CAPACITY), and the takeover succeeds: the connections that fit move,
// the others stay with the predecessor, which answers them until their
// clients hang up, and then exits. Every connection is answered after the
// takeover, by one generation or the other. Without CAPACITY the
// successor's batch arrived truncated and the handoff failed. With a limit
// of 400 some move; with 72, no room is left beyond the successor's own
// descriptors and margin (72 less 64 and 4 leaves less than what any
// process holds open), it does not ask for the migration, and all stay.
//
// While the connections arrive, a successor short of room (its
// predecessor has more descriptors open) holds its accepts (AcceptWait):
// with 400 it does, and with no limit of its own (0: the test's, far
// above 600) it does not.
func TestMigrateUnderDescriptorLimit(t *testing.T) {
	for _, tc := range []struct {
		limit int
		some  bool
	}{{400, true}, {72, false}, {0, true}} {
		t.Run(strconv.Itoa(tc.limit), func(t *testing.T) { testUnderLimit(t, tc.limit, tc.some) })
	}
}

// testUnderLimit runs the test with the successor limited to limit
// descriptors (0: not lowered).
func testUnderLimit(t *testing.T, limit int, some bool) {
	restartCheckLeaks(t)
	const n = 600
	env := []string{envPath + "=" + filepath.Join(t.TempDir(), "handoff.sock")}
	prev := startRestartChild(t, "", "migbench", nil, env...)
	line := prev.expect("ready gen=1 ")
	conns := benchClients(t, field(line, "addr"), n)
	t.Cleanup(func() { // before the leak check, also when the test fails
		for _, c := range conns {
			c.Close()
		}
	})
	for i, c := range conns {
		if got := echoLine(t, c, i); !strings.HasPrefix(got, "1 ") {
			t.Fatalf("connection %d before the takeover: %q", i, got)
		}
	}
	nextEnv := env
	if limit > 0 {
		nextEnv = append(env, envNoFile+"="+strconv.Itoa(limit))
	}
	next := startRestartChild(t, "", "migbench", nil, nextEnv...)
	line = next.expect("ready gen=2 ")
	moved, _ := strconv.Atoi(field(line, "migrated"))
	switch {
	case limit == 0 && moved != n, limit > 0 && some && (moved <= 0 || moved >= limit), !some && moved != 0, field(line, "badstate") != "0":
		t.Fatalf("successor under a limit of %d descriptors: %s; want some (%v) of %d connections migrated with their state", limit, line, some, n)
	case field(line, "held") != strconv.FormatBool(limit > 0 && some):
		t.Errorf("successor under a limit of %d descriptors: %s; want accepts held (AcceptWait) while the connections arrive if and only if the room is short", limit, line)
	}
	byGen := map[string]int{}
	for i, c := range conns {
		got := echoLine(t, c, i)
		byGen[strings.Fields(got)[0]]++
	}
	if byGen["2"] != moved || byGen["1"] != n-moved {
		t.Errorf("answers by generation %v; want %d by 2 (moved) and %d by 1 (stayed)", byGen, moved, n-moved)
	}
	t.Logf("%d of %d connections moved to a successor limited to %d descriptors (0: not lowered); the others stayed", moved, n, limit)
	for _, c := range conns {
		c.Close()
	}
	prev.expect("exit gen=1")
	prev.mustExit()
	next.cmd.Process.Kill()
	next.wait()
}

// echoLine sends a line on c and returns the answer, failing the test if
// there is none.
func echoLine(t *testing.T, c interface {
	io.ReadWriter
	SetDeadline(time.Time) error
}, i int) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	msg := fmt.Sprintf("ping %d\n", i)
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("connection %d: %v", i, err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasSuffix(got, " "+msg) {
		t.Fatalf("connection %d: %q, %v", i, got, err)
	}
	return got
}

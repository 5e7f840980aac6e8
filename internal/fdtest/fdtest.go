// Package fdtest holds the descriptor-leak checks that the project's tests
// share: every test that touches a descriptor counts the process's open
// descriptors before and after.
package fdtest

import (
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
)

// WarmUp makes the runtime open what it opens once (the network poller and
// its wake-up descriptor), so that counts taken later compare like with
// like. Call it from TestMain, in children too.
func WarmUp() {
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	if pc, err := net.ListenPacket("udp", "127.0.0.1:0"); err == nil {
		pc.Close()
	}
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
}

// AwaitCount polls until the process has want descriptors open, giving
// goroutines that are still closing theirs a deadline, and reports a leak
// otherwise.
func AwaitCount(want int) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := fd.Count()
		if err != nil {
			return err
		}
		if got == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("descriptor leak: %d open before, %d after", want, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// CheckLeaks records the open-descriptor count and, when the test ends
// (after the cleanups registered later have run), fails it unless the
// count is back where it was.
func CheckLeaks(tb testing.TB) {
	tb.Helper()
	before, err := fd.Count()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := AwaitCount(before); err != nil {
			tb.Error(err)
		}
	})
}

// CountOf returns the number of descriptors process pid has open, from
// /proc (Linux).
func CountOf(tb testing.TB, pid int) int {
	tb.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		tb.Fatal(err)
	}
	return len(ents)
}

// AwaitCountOf polls until process pid has want descriptors open, within
// 10 seconds, and fails tb otherwise.
func AwaitCountOf(tb testing.TB, pid, want int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := CountOf(tb, pid)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("process %d: %d descriptors open, want %d", pid, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

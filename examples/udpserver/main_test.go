package main_test

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fdpass/fdpass/examples/internal/proc"
)

// slowestAllowed bounds the median, over the takeovers, of the slowest
// answer to a datagram sent during a takeover: a takeover in which no
// instance reads the socket for a second breaks it (see the httpserver
// test for why the median).
const slowestAllowed = 500 * time.Millisecond

// TestTakeoversLoseNoDatagram sends numbered datagrams at a steady rate
// while the server is handed over ten times, and checks that every datagram
// is answered exactly once, by every generation in turn, and that no
// takeover keeps datagrams waiting. Every failure is counted: a datagram
// not answered, answered twice, or answered with a reply that is not its
// own.
func TestTakeoversLoseNoDatagram(t *testing.T) {
	dir := t.TempDir()
	bin := proc.BuildT(t, dir, "github.com/fdpass/fdpass/examples/udpserver")
	addr := freeUDP(t)
	args := []string{"-graceful", filepath.Join(dir, "handoff.sock"), "-listen", addr}
	current := proc.StartT(t, bin, args...)
	if _, err := current.Await("ready", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.UDPConn).SetReadBuffer(4 << 20)

	var mu sync.Mutex
	var sent []time.Time               // seq -> when it was sent
	answers := map[int]int{}           // seq -> times answered
	latency := map[int]time.Duration{} // seq -> until its first answer
	byPID := map[string]int{}          // instance -> answers
	var bad []string                   // replies that answer no datagram sent
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 256)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			now := time.Now()
			reply := string(buf[:n])
			f := strings.Fields(reply)
			mu.Lock()
			seq := -1
			if len(f) == 3 && strings.HasPrefix(f[1], "pid=") && strings.HasPrefix(f[2], "n=") {
				if s, err := strconv.Atoi(f[0]); err == nil && s >= 0 && s < len(sent) {
					seq = s
				}
			}
			if seq < 0 {
				bad = append(bad, reply)
			} else {
				if answers[seq]++; answers[seq] == 1 {
					latency[seq] = now.Sub(sent[seq])
				}
				byPID[strings.TrimPrefix(f[1], "pid=")]++
			}
			mu.Unlock()
		}
	}()
	// sentSoFar returns how many datagrams have been sent.
	sentSoFar := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(sent)
	}

	var sending sync.WaitGroup
	stopSending := make(chan struct{})
	var sendErrs []error
	sending.Go(func() {
		tick := time.NewTicker(500 * time.Microsecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSending:
				return
			case <-tick.C:
			}
			mu.Lock()
			seq := len(sent)
			sent = append(sent, time.Now())
			mu.Unlock()
			if _, err := fmt.Fprintf(c, "%d", seq); err != nil {
				// Counted as not answered too.
				sendErrs = append(sendErrs, err)
			}
		}
	})

	const takeovers = 10
	// answeredBy polls until the instance has answered n datagrams.
	answeredBy := func(in *proc.Instance, n int) {
		t.Helper()
		pid := strconv.Itoa(in.PID())
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			got := byPID[pid]
			mu.Unlock()
			if got >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("instance %s answered %d datagrams in 10s, want %d", pid, got, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// windows[i] holds the datagrams sent during takeover i: from the
	// start of the successor until it has answered 50.
	var windows [][2]int
	for range takeovers {
		answeredBy(current, 50)
		from := sentSoFar()
		next := proc.StartT(t, bin, args...)
		if _, err := next.Await("ready", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := current.Wait(10 * time.Second); err != nil {
			t.Fatalf("old instance: %v", err)
		}
		current = next
		answeredBy(current, 50)
		windows = append(windows, [2]int{from, sentSoFar()})
	}
	close(stopSending)
	sending.Wait()

	// Poll until every datagram has its answer, or a deadline passes.
	total := sentSoFar()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(answers)
		mu.Unlock()
		if n == total || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close()
	<-readDone
	mu.Lock()
	defer mu.Unlock()

	var lost, twice []int
	for seq := range total {
		switch answers[seq] {
		case 1:
		case 0:
			lost = append(lost, seq)
		default:
			twice = append(twice, seq)
		}
	}
	if failed := len(lost) + len(twice) + len(bad) + len(sendErrs); failed > 0 {
		t.Errorf("%d of %d datagrams failed: %d not answered %v, %d answered more than once %v, %d replies to no datagram sent %q, %d not sent %v",
			failed, total, len(lost), first(lost), len(twice), first(twice), len(bad), first(bad), len(sendErrs), first(sendErrs))
	}
	if len(byPID) != takeovers+1 {
		t.Errorf("%d instances answered, want %d: %v", len(byPID), takeovers+1, byPID)
	}

	var slowest []time.Duration
	for i, w := range windows {
		s, at := time.Duration(0), -1
		for seq := w[0]; seq < w[1]; seq++ {
			if d, ok := latency[seq]; ok && d > s {
				s, at = d, seq
			}
		}
		slowest = append(slowest, s)
		t.Logf("takeover %d: datagrams %d-%d, slowest answer %v (datagram %d)", i+1, w[0], w[1]-1, s, at)
	}
	slices.Sort(slowest)
	if m := slowest[len(slowest)/2]; m > slowestAllowed {
		t.Errorf("the slowest answer of a takeover: median %v over %d takeovers, want at most %v (all: %v)", m.Round(time.Millisecond), takeovers, slowestAllowed, slowest)
	}
	t.Logf("%d datagrams, %d instances", total, len(byPID))
}

// first returns the first few elements of s.
func first[T any](s []T) []T { return s[:min(len(s), 5)] }

func freeUDP(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

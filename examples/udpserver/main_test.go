package main_test

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fdpass/fdpass/examples/internal/proc"
)

// TestTakeoversLoseNoDatagram sends numbered datagrams at a steady rate
// while the server is handed over ten times, and checks that every datagram
// is answered exactly once, by every generation in turn.
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
	answers := map[int]int{}  // seq -> times answered
	byPID := map[string]int{} // instance -> answers
	var bad []string
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 256)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			f := strings.Fields(string(buf[:n]))
			seq, err := strconv.Atoi(f[0])
			mu.Lock()
			if err != nil || len(f) != 3 {
				bad = append(bad, string(buf[:n]))
			} else {
				answers[seq]++
				byPID[strings.TrimPrefix(f[1], "pid=")]++
			}
			mu.Unlock()
		}
	}()

	var sent sync.WaitGroup
	stopSending := make(chan struct{})
	total := 0
	sent.Go(func() {
		tick := time.NewTicker(500 * time.Microsecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSending:
				return
			case <-tick.C:
			}
			if _, err := fmt.Fprintf(c, "%d", total); err != nil {
				t.Error(err)
				return
			}
			total++
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
	for range takeovers {
		answeredBy(current, 50)
		next := proc.StartT(t, bin, args...)
		if _, err := next.Await("ready", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := current.Wait(10 * time.Second); err != nil {
			t.Fatalf("old instance: %v", err)
		}
		current = next
	}
	answeredBy(current, 50)
	close(stopSending)
	sent.Wait()

	// Poll until every datagram has its answer, or a deadline passes.
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
	if len(bad) > 0 {
		t.Errorf("malformed replies: %q", bad)
	}
	for seq := range total {
		switch answers[seq] {
		case 1:
		case 0:
			t.Errorf("datagram %d was never answered", seq)
		default:
			t.Errorf("datagram %d was answered %d times", seq, answers[seq])
		}
	}
	if len(byPID) != takeovers+1 {
		t.Errorf("%d instances answered, want %d: %v", len(byPID), takeovers+1, byPID)
	}
	t.Logf("%d datagrams, %d instances", total, len(byPID))
}

func freeUDP(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

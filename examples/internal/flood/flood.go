// Package flood opens many TCP connections to a server and holds them:
// what a careless client or a local attacker does to push a server to its
// descriptor limit (EMFILE), for the examples' tests.
package flood

import (
	"net"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/fdpass/fdpass/examples/internal/proc"
)

// Hold dials addr n times (each dial bounded by a second; what fails is
// skipped), keeps the connections open for d, then closes them. It
// returns how many it held.
func Hold(addr string, n int, d time.Duration) int {
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	work := make(chan struct{}, n)
	for range n {
		work <- struct{}{}
	}
	close(work)
	for range 32 {
		wg.Go(func() {
			for range work {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	time.Sleep(d)
	for _, c := range conns {
		c.Close()
	}
	return len(conns)
}

// Survive checks, for a test, that the example bin (a test's build),
// limited to 1,024 descriptors, survives a flood of 3,000 connections held
// for 3 s: it answers probe again within 5 s of the flood's end, and
// hands over to a new instance with the same args, which answers too.
// args must give the listen address as 127.0.0.1:0 and a -graceful path.
func Survive(t *testing.T, bin string, args []string, probe func(addr string) error) {
	t.Helper()
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("needs prlimit (util-linux)")
	}
	first := proc.StartT(t, prlimit, append([]string{"--nofile=1024:1024", "--", bin}, args...)...)
	line, err := first.Await("ready", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	addr := proc.Field(line, "addr")
	held := Hold(addr, 3000, 3*time.Second)
	if held < 1100 {
		t.Fatalf("the flood held only %d connections: the server did not run out of descriptors", held)
	}
	ended := time.Now()
	for {
		err := probe(addr)
		if err == nil {
			break
		}
		if time.Since(ended) > 5*time.Second {
			t.Fatalf("no answer within 5 s of the flood's end: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("answering %v after the flood of %d connections ended", time.Since(ended).Round(time.Millisecond), held)
	next := proc.StartT(t, bin, args...)
	if _, err := next.Await("ready", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Await("exit", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := probe(addr); err != nil {
		t.Fatalf("after the handoff: %v", err)
	}
}

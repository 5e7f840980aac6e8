// Package flood opens many TCP connections to a server and holds them:
// what a careless client or a local attacker does to push a server to its
// descriptor limit (EMFILE), or, as keep-alive HTTP clients (Idle), what
// a busy server holds near its limit; for the examples' tests.
package flood

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/fdpass/fdpass/examples/internal/proc"
)

// Hold dials addr n times (each dial bounded by a second; what fails is
// skipped), keeps the connections open until release is closed, then
// closes them. It returns how many it held.
func Hold(addr string, n int, release <-chan struct{}) int {
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
	<-release
	for _, c := range conns {
		c.Close()
	}
	return len(conns)
}

// Flood is connections held in the background (Hold) until End.
type Flood struct {
	release chan struct{}
	held    chan int
	once    sync.Once
	n       int
}

// Start dials addr n times in the background and holds the connections
// until End, which the end of t calls too.
func Start(t testing.TB, addr string, n int) *Flood {
	f := &Flood{release: make(chan struct{}), held: make(chan int, 1)}
	go func() { f.held <- Hold(addr, n, f.release) }()
	t.Cleanup(func() { f.End() })
	return f
}

// End closes the connections and returns how many were held.
func (f *Flood) End() int {
	f.once.Do(func() {
		close(f.release)
		f.n = <-f.held
	})
	return f.n
}

// Survive checks, for a test, that the example bin (a test's build),
// limited to 1,024 descriptors, survives a flood of 3,000 connections held
// for 3 s: it answers probe again within 5 s of the flood's end. Then,
// out of descriptors again under a second flood that holds on, it hands
// over to a new instance with the same args under the same limit (what a
// reload under systemd or in a container starts): the successor must be
// ready within 10 s, while the flood still holds, without a rollback,
// and once the flood ends answer probe within 5 s, the old instance gone.
// (While the flood holds, the connections beyond what its limit holds
// wait in the listener's backlog, the probe's among them.) args must give
// the listen address as 127.0.0.1:0 and a -graceful path.
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
	release := make(chan struct{})
	time.AfterFunc(3*time.Second, func() { close(release) })
	held := Hold(addr, 3000, release)
	if held < 1100 {
		t.Fatalf("the flood held only %d connections: the server did not run out of descriptors", held)
	}
	took := AwaitProbe(t, addr, probe)
	t.Logf("answering %v after the flood of %d connections ended", took.Round(time.Millisecond), held)

	second := Start(t, addr, 3000)
	// prlimit execs bin: the first's PID is bin's.
	AwaitDescriptors(t, first.PID(), 1000)
	start := time.Now()
	next := proc.StartT(t, prlimit, append([]string{"--nofile=1024:1024", "--", bin}, args...)...)
	// The flood holds until End, below.
	if _, err := next.Await("ready", 10*time.Second); err != nil {
		t.Fatalf("successor of a server out of descriptors: %v", err)
	}
	t.Logf("successor ready %v after it started, the flood holding", time.Since(start).Round(time.Millisecond))
	if n := second.End(); n < 1100 {
		t.Errorf("the second flood held only %d connections", n)
	}
	if _, err := first.Await("exit", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	AwaitProbe(t, addr, probe)
	if n := first.Count("rollback") + next.Count("rollback"); n != 0 {
		t.Errorf("%d rollbacks", n)
	}
}

// AwaitProbe waits up to 5 s for probe to succeed and returns how long
// it took.
func AwaitProbe(t *testing.T, addr string, probe func(addr string) error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := probe(addr)
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("no answer within 5 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// AwaitDescriptors waits until process pid has at least n descriptors
// open.
func AwaitDescriptors(t *testing.T, pid, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d has %d descriptors open after 20 s, want %d", pid, len(ents), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

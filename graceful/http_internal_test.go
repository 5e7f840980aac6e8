//go:build linux

package graceful

import (
	"net"
	"net/http"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestResumedConnCounted: a connection handed back to net/http after a
// failed migration is counted by Drain from the moment it resumes, not
// from its next StateNew: net/http ends its first round (StateClosed)
// before the second begins, and a Drain that found no connection in
// between would let the process exit with the connection's next request
// unread, which the kernel answers with a reset.
func TestResumedConnCounted(t *testing.T) {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sp[1])
	f := os.NewFile(uintptr(sp[0]), "conn")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{}
	hs := &HTTPServer{p: p, srv: &http.Server{}, conns: map[net.Conn]int{}, resumed: map[net.Conn]int{}, zero: make(chan struct{}, 1)}
	hs.gate.hs = hs
	// A listener nobody accepts from: the resumed connection waits to be
	// handed to net/http, as it may for a while under load.
	hs.ln = &httpListener{hs: hs, conns: make(chan net.Conn), done: make(chan struct{}), accepted: make(chan struct{})}
	c := p.mig.Track(nc, hs.gate)
	defer c.Close()
	hs.connState(c, http.StateNew)
	hs.resume(c) // the migration failed: serve it anew
	hs.connState(c, http.StateClosed)
	hs.mu.Lock()
	n := hs.conns[c]
	hs.mu.Unlock()
	if n != 1 {
		t.Fatalf("a resumed connection counts %d rounds between its rounds, want 1", n)
	}
	// Its second round: counted once, and over at its StateClosed.
	hs.connState(c, http.StateNew)
	hs.connState(c, http.StateClosed)
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if len(hs.conns) != 0 || len(hs.resumed) != 0 {
		t.Errorf("after its second round: conns %v, resumed %v", hs.conns, hs.resumed)
	}
}

package graceful

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/internal/fdtest"
	"golang.org/x/sys/unix"
)

// held reports whether AcceptWait holds accepts.
func held(p *Process) bool {
	select {
	case <-p.AcceptWait():
		return false
	default:
		return true
	}
}

// TestHoldAcceptsNest: accepts are held from the first holdAccepts until
// every release has been called; a release called twice counts once.
func TestHoldAcceptsNest(t *testing.T) {
	p := &Process{}
	if held(p) {
		t.Fatal("held before any hold")
	}
	a := p.holdAccepts()
	wait := p.AcceptWait()
	b := p.holdAccepts()
	if !held(p) || p.AcceptWait() != wait {
		t.Fatal("a second hold is not the same hold")
	}
	a()
	a()
	if !held(p) {
		t.Fatal("released while a second hold is on (the first release called twice)")
	}
	b()
	if held(p) {
		t.Fatal("held after every release")
	}
	select {
	case <-wait:
	default:
		t.Fatal("the channel of the hold is not closed at its end")
	}
	c := p.holdAccepts()
	if !held(p) {
		t.Fatal("not held by a new hold after the first ended")
	}
	c()
}

// TestWithSpares: an attempt that fails for want of a descriptor runs
// again with the spare descriptors closed and accepts held; then the
// spares are back and accepts go on. Any other failure, or none, is not
// tried again; with no spares left there is no second try.
func TestWithSpares(t *testing.T) {
	fdtest.CheckLeaks(t)
	p := &Process{}
	p.spare.refill(spareFDs)
	defer p.spare.release()
	if len(p.spare) != spareFDs {
		t.Fatalf("%d spares, want %d", len(p.spare), spareFDs)
	}
	calls := 0
	err := p.withSpares(func() error {
		calls++
		if calls == 1 {
			return syscall.EMFILE
		}
		if !held(p) {
			t.Error("accepts not held on the second try")
		}
		if len(p.spare) != 0 {
			t.Errorf("%d spares open on the second try, want them closed", len(p.spare))
		}
		return nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("withSpares = %v after %d calls, want nil after 2", err, calls)
	}
	if held(p) || len(p.spare) != spareFDs {
		t.Fatalf("after: held %t, %d spares (want %d)", held(p), len(p.spare), spareFDs)
	}
	for _, f := range p.spare {
		if _, err := unix.FcntlInt(uintptr(f), unix.F_GETFD, 0); err != nil {
			t.Fatalf("spare %d not open after: %v", f, err)
		}
	}

	other := errors.New("another failure")
	calls = 0
	if err := p.withSpares(func() error { calls++; return other }); err != other || calls != 1 {
		t.Errorf("another failure: %v after %d calls, want it after 1", err, calls)
	}

	// No spares left: no second try.
	p.spare.release()
	calls = 0
	if err := p.withSpares(func() error { calls++; return syscall.ENFILE }); !errors.Is(err, syscall.ENFILE) || calls != 1 || held(p) {
		t.Errorf("no spares: %v after %d calls, held %t; want ENFILE after 1, not held", err, calls, held(p))
	}
}

// TestWaitListener: Accept waits while accepts are held and goes on when
// they are released; Close ends a wait with the listener's own error for
// a closed listener.
func TestWaitListener(t *testing.T) {
	fdtest.CheckLeaks(t)
	p := &Process{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wl := p.WaitListener(ln)
	defer wl.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	accept := func() chan accepted {
		ch := make(chan accepted, 1)
		go func() {
			c, err := wl.Accept()
			ch <- accepted{c, err}
		}()
		return ch
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	// Not held: at once.
	c := dial()
	defer c.Close()
	select {
	case a := <-accept():
		if a.err != nil {
			t.Fatal(a.err)
		}
		a.c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("Accept did not return with accepts not held")
	}

	// Held: a connection waits in the backlog until the release.
	release := p.holdAccepts()
	c2 := dial()
	defer c2.Close()
	got := accept()
	select {
	case a := <-got:
		t.Fatalf("Accept returned (%v, %v) while accepts were held", a.c, a.err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	select {
	case a := <-got:
		if a.err != nil {
			t.Fatal(a.err)
		}
		a.c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("Accept did not return once accepts were released")
	}

	// Held, then closed: the wait ends.
	release = p.holdAccepts()
	defer release()
	got = accept()
	wl.Close()
	select {
	case a := <-got:
		if !errors.Is(a.err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", a.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end a held Accept")
	}
}

package graceful

import (
	"errors"
	"syscall"
	"testing"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/internal/fdtest"
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
	open := func() int {
		n, err := fd.Count()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := open()
	calls := 0
	err := p.withSpares(func() error {
		calls++
		if calls == 1 {
			return syscall.EMFILE
		}
		if !held(p) {
			t.Error("accepts not held on the second try")
		}
		if n := open(); n != before-spareFDs {
			t.Errorf("%d descriptors open on the second try, want %d (the spares closed)", n, before-spareFDs)
		}
		return nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("withSpares = %v after %d calls, want nil after 2", err, calls)
	}
	if held(p) || len(p.spare) != spareFDs || open() != before {
		t.Fatalf("after: held %t, %d spares, %d open (want %d)", held(p), len(p.spare), open(), before)
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

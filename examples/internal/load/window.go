package load

import (
	"slices"
	"sync"
	"time"
)

// Window follows the counts and the slowest request over a span of time,
// such as a takeover: open it with Load.Window before, close it after.
//
// Its slowest request is the one that waited longest while the window was
// open: a request that began before the window opened counts from the
// opening, so that what happened before (a successor starting up on a
// loaded machine, say) does not count.
type Window struct {
	l      *Load
	opened time.Time
	base   Stats

	mu      sync.Mutex
	slowest Request
	final   *Stats // set by Close
}

// Window opens a window from now on.
func (l *Load) Window() *Window {
	w := &Window{l: l, opened: time.Now()}
	l.openMu.Lock()
	open := append(slices.Clone(*l.open.Load()), w)
	l.open.Store(&open)
	l.openMu.Unlock()
	w.base = l.Stats()
	return w
}

// observe takes a finished request into account.
func (w *Window) observe(r Request) {
	r.Duration = w.within(r.Start, r.Start.Add(r.Duration))
	w.mu.Lock()
	if r.Duration > w.slowest.Duration && w.final == nil {
		w.slowest = r
	}
	w.mu.Unlock()
}

// within returns how much of the span from start to end lies after the
// window opened.
func (w *Window) within(start, end time.Time) time.Duration {
	if start.Before(w.opened) {
		start = w.opened
	}
	return max(end.Sub(start), 0)
}

// Stats returns the counts since the window opened (until it closed, if it
// did). Its Slowest is the request that ended while the window was open,
// or is still in flight, and waited longest while it was; its Duration
// counts from the window's opening if it began before.
func (w *Window) Stats() Stats {
	w.mu.Lock()
	final := w.final
	w.mu.Unlock()
	if final != nil {
		return *final
	}
	now := time.Now()
	s := w.l.Stats().Sub(w.base)
	w.mu.Lock()
	s.Slowest = w.slowest
	w.mu.Unlock()
	for i, cs := range s.Clients {
		if cs.InFlightSince.IsZero() {
			continue
		}
		if d := w.within(cs.InFlightSince, now); d > s.Slowest.Duration {
			s.Slowest = Request{Client: i, Start: cs.InFlightSince, Duration: d, InFlight: true}
		}
	}
	return s
}

// Close closes the window and returns its final Stats.
func (w *Window) Close() Stats {
	s := w.Stats()
	w.mu.Lock()
	if w.final == nil {
		w.final = &s
	} else {
		s = *w.final
	}
	w.mu.Unlock()
	l := w.l
	l.openMu.Lock()
	open := slices.DeleteFunc(slices.Clone(*l.open.Load()), func(o *Window) bool { return o == w })
	l.open.Store(&open)
	l.openMu.Unlock()
	return s
}

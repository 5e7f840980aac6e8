package migrate

import (
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// interruptTick is how long take waits for an arrival before it interrupts
// more readers.
const interruptTick = 5 * time.Millisecond

// lateSettle is how long the first phase of a migration that continues
// after DONE (see Outgoing.Late) waits for another reader to arrive once
// every reader is interrupted; the readers still busy then move later.
const lateSettle = 2 * time.Millisecond

// quiet is a quiesce in progress: it counts the readers it waits for and
// queues the connections whose readers reached Handoff, in the order they
// did. Only the last reader to arrive, or the one that fills a batch, wakes
// the goroutine that takes them: with thousands of connections, waking it
// for each one cost as much as interrupting them. Once the migration
// continues after DONE (eager), every arrival wakes it: they come one by
// one.
type quiet struct {
	log     *slog.Logger
	snap    []*Conn // the connections being quiesced
	next    int     // snap[:next] are interrupted
	left    atomic.Int64
	ungated atomic.Int64  // connections without a Gate not arrived yet
	arrived atomic.Int64  // arrivals so far
	eager   atomic.Bool   // wake the taker at every arrival
	all     chan struct{} // closed when left reaches 0
	kick    chan struct{} // a batch has arrived
	batch   int           // queue length that kicks; 0: none
	timer   *time.Timer

	mu    sync.Mutex
	queue []*Conn // arrived, not taken yet
	cut   bool    // the first phase is over (take)
	over  bool    // no more will arrive
}

// arrive says that c's reader reached Handoff, with c.mu held.
func (q *quiet) arrive(c *Conn) {
	q.mu.Lock()
	q.queue = append(q.queue, c)
	full := len(q.queue) == q.batch
	q.mu.Unlock()
	q.arrived.Add(1)
	if full || q.eager.Load() {
		q.wake()
	}
	q.leave(c)
}

// leave says that c, being quiesced, was closed or stays (or arrived),
// with c.mu held.
func (q *quiet) leave(c *Conn) {
	if c.gate == nil {
		q.ungated.Add(-1)
	}
	q.release()
}

// release gives up one count of the readers waited for.
func (q *quiet) release() {
	if q.left.Add(-1) == 0 {
		close(q.all)
	}
}

// wake wakes the goroutine waiting in take, if any, to look again.
func (q *quiet) wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// startQuiesce stops the reader of every tracked connection at its next
// message boundary. Those that reach Handoff within the quiesce timeout
// queue up to be taken; the others stay. With batch 0, every reader is
// interrupted now and take wakes only once the quiesce is over. Otherwise
// readers are interrupted batch by batch, ahead of take: thousands
// interrupted at once would all run before the goroutine that sends them,
// and take wakes whenever batch connections wait. With most > 0, only the
// first most idle connections quiesce; the others are left alone.
func (t *Tracker) startQuiesce(batch int, wait time.Duration, most int, log *slog.Logger) *quiet {
	snap := t.snapshot()
	q := &quiet{
		log: log, batch: batch,
		all:   make(chan struct{}),
		kick:  make(chan struct{}, 1),
		queue: make([]*Conn, 0, len(snap)),
		timer: time.NewTimer(wait),
	}
	// The count starts at one, which this goroutine gives up once the
	// phases are set: readers that arrive meanwhile cannot bring it to
	// zero early. A reader that is not interrupted yet stops when it comes
	// back for the next message.
	q.left.Store(1)
	if most > 0 && most < len(snap) {
		log.Warn("graceful: the successor takes only some connections; the others stay and drain",
			slog.Int("takes", most), slog.Int("tracked", len(snap)))
		// Connections whose readers wait for the next message first:
		// they move at once; a busy one might never.
		ready, busy := make([]*Conn, 0, len(snap)), make([]*Conn, 0, len(snap))
		for _, c := range snap {
			if c.movesAtOnce() {
				ready = append(ready, c)
			} else {
				busy = append(busy, c)
			}
		}
		snap = append(ready, busy...)
	}
	q.snap = snap[:0] // filled as snap is read
	for _, c := range snap {
		c.mu.Lock()
		if c.phase == phaseIdle && (most <= 0 || len(q.snap) < most) {
			q.left.Add(1)
			if c.gate == nil {
				q.ungated.Add(1)
			}
			c.phase = phaseQuiescing
			c.quiet = q
			q.snap = append(q.snap, c)
		}
		c.mu.Unlock()
	}
	if batch > 0 {
		q.interrupt(2 * batch)
	} else {
		q.interrupt(len(q.snap))
	}
	q.release()
	return q
}

// movesAtOnce reports whether c's reader stops as soon as it is
// interrupted: it has no Gate, or it waits for the next message.
func (c *Conn) movesAtOnce() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gate == nil || c.idle
}

// interrupt interrupts the read of the next n readers still quiescing,
// which then find their connection quiescing.
func (q *quiet) interrupt(n int) {
	end := q.next + min(n, len(q.snap)-q.next)
	for _, c := range q.snap[q.next:end] {
		c.mu.Lock()
		// A watching reader may be in the socket: woken, it waits
		// instead (see Conn.Watch).
		if c.phase == phaseQuiescing && c.quiet == q && (c.gate == nil || c.idle || c.watching) {
			c.Conn.SetReadDeadline(aLongTimeAgo)
		}
		c.mu.Unlock()
	}
	q.next = end
}

// take waits until n connections have arrived, or the quiesce is over, and
// takes up to n of them. last reports that none will follow in this phase.
// Only one goroutine takes. While it waits and no reader arrives, it
// interrupts n more every interruptTick: readers that never stop (a long
// response, a slow handler) must not hold up those not interrupted yet.
//
// With settle > 0 the phase also ends once every reader is interrupted,
// every connection without a Gate has arrived, and no reader has arrived
// for settle: the readers still busy are waited for after DONE, by
// takeLate.
func (q *quiet) take(n int, settle time.Duration) (cs []*Conn, last bool) {
	var tick, calm *time.Timer
	var seen int64
	if settle > 0 {
		calm = time.NewTimer(settle)
		seen = q.arrived.Load()
	}
	defer func() {
		if tick != nil {
			tick.Stop()
		}
		if calm != nil {
			calm.Stop()
		}
	}()
	for first := true; ; first = false {
		q.mu.Lock()
		done := q.over || q.cut
		if len(q.queue) >= n || done {
			k := min(n, len(q.queue))
			cs, q.queue = q.queue[:k:k], q.queue[k:]
			last = done && len(q.queue) == 0
			q.mu.Unlock()
			return cs, last
		}
		q.mu.Unlock()
		if first {
			q.interrupt(n)
		}
		var ticks, calmed <-chan time.Time
		if q.next < len(q.snap) {
			if tick == nil {
				tick = time.NewTimer(interruptTick)
			} else {
				tick.Reset(interruptTick)
			}
			ticks = tick.C
		}
		if calm != nil {
			calmed = calm.C
		}
		left := q.left.Load()
		select {
		case <-q.kick:
		case <-ticks:
			if q.left.Load() == left {
				q.interrupt(n)
			}
		case <-calmed:
			now := q.arrived.Load()
			if now == seen && q.next == len(q.snap) && q.ungated.Load() == 0 {
				q.mu.Lock()
				q.cut = true
				q.mu.Unlock()
				calm = nil
				continue
			}
			seen = now
			calm.Reset(settle)
		case <-q.all:
			q.end()
		case <-q.timer.C:
			q.timedOut()
		}
	}
}

// takeLate waits until a connection has arrived, or the quiesce is over
// (stop ends it), and takes up to n of those that have. last reports that
// none will follow.
func (q *quiet) takeLate(n int, stop <-chan struct{}) (cs []*Conn, last bool) {
	q.eager.Store(true)
	for {
		q.mu.Lock()
		if len(q.queue) > 0 || q.over {
			k := min(n, len(q.queue))
			cs, q.queue = q.queue[:k:k], q.queue[k:]
			last = q.over && len(q.queue) == 0
			q.mu.Unlock()
			return cs, last
		}
		q.mu.Unlock()
		select {
		case <-q.kick:
		case <-q.all:
			q.end()
		case <-q.timer.C:
			q.timedOut()
		case <-stop:
			q.end()
		}
	}
}

// timedOut ends the quiesce when its time is up.
func (q *quiet) timedOut() {
	if late := q.end(); late > 0 {
		q.log.Info("graceful: connections did not reach a message boundary in time; they stay", slog.Int("count", late))
	}
}

// drain ends the quiesce and takes every connection that arrived.
func (q *quiet) drain() []*Conn {
	q.end()
	q.mu.Lock()
	defer q.mu.Unlock()
	cs := q.queue
	q.queue = nil
	return cs
}

// end ends the quiesce: readers not in Handoff yet keep their connections,
// and one that arrives later finds its connection idle and carries on. It
// returns how many stay so. Those that arrived can still be taken. It may
// be called again, and from another goroutine than take's.
func (q *quiet) end() (late int) {
	q.mu.Lock()
	over := q.over
	q.mu.Unlock()
	if over {
		return 0
	}
	q.timer.Stop()
	if q.left.Load() > 0 {
		for _, c := range q.snap {
			c.mu.Lock()
			if c.phase == phaseQuiescing && c.quiet == q {
				c.phase = phaseIdle
				c.quiet = nil
				c.Conn.SetReadDeadline(c.rdl)
				c.wake()
				late++
			}
			c.mu.Unlock()
		}
	}
	q.mu.Lock()
	q.over = true
	q.mu.Unlock()
	return late
}

// quiesce interrupts the readers of every tracked connection and returns
// those that reach Handoff within the quiesce timeout; the others stay.
func (t *Tracker) quiesce(wait time.Duration, log *slog.Logger) []*Conn {
	cs, _ := t.startQuiesce(0, wait, 0, log).take(math.MaxInt, 0)
	return cs
}

var aLongTimeAgo = time.Unix(1, 0)

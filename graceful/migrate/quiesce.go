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

// quiet is a quiesce in progress: it counts the readers it waits for and
// queues the connections whose readers reached Handoff, in the order they
// did. Only the last reader to arrive, or the one that fills a batch, wakes
// the goroutine that takes them: with thousands of connections, waking it
// for each one cost as much as interrupting them.
type quiet struct {
	log   *slog.Logger
	snap  []*Conn // the connections being quiesced
	next  int     // snap[:next] are interrupted
	left  atomic.Int64
	all   chan struct{} // closed when left reaches 0
	kick  chan struct{} // a batch has arrived
	batch int           // queue length that kicks; 0: none
	timer *time.Timer

	mu    sync.Mutex
	queue []*Conn // arrived, not taken yet
	over  bool    // no more will arrive
}

// arrive says that c's reader reached Handoff, or (c nil) that a
// connection being quiesced was closed, each with c.mu held; startQuiesce
// also gives up its own count with it.
func (q *quiet) arrive(c *Conn) {
	if c != nil {
		q.mu.Lock()
		q.queue = append(q.queue, c)
		full := len(q.queue) == q.batch
		q.mu.Unlock()
		if full {
			q.wake()
		}
	}
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
// and take wakes whenever batch connections wait.
func (t *Tracker) startQuiesce(batch int, wait time.Duration, log *slog.Logger) *quiet {
	snap := t.snapshot()
	q := &quiet{
		log: log, batch: batch,
		snap:  snap[:0],
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
	for _, c := range snap {
		c.mu.Lock()
		if c.phase == phaseIdle {
			q.left.Add(1)
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
	q.arrive(nil)
	return q
}

// interrupt interrupts the read of the next n readers still quiescing,
// which then find their connection quiescing.
func (q *quiet) interrupt(n int) {
	end := q.next + min(n, len(q.snap)-q.next)
	for _, c := range q.snap[q.next:end] {
		c.mu.Lock()
		if c.phase == phaseQuiescing && c.quiet == q && (c.gate == nil || c.idle) {
			c.Conn.SetReadDeadline(aLongTimeAgo)
		}
		c.mu.Unlock()
	}
	q.next = end
}

// take waits until n connections have arrived, or the quiesce is over, and
// takes up to n of them. last reports that none will follow. Only one
// goroutine takes. While it waits and no reader arrives, it interrupts n
// more every interruptTick: readers that never stop (a long response, a
// slow handler) must not hold up those not interrupted yet.
func (q *quiet) take(n int) (cs []*Conn, last bool) {
	var tick *time.Timer
	defer func() {
		if tick != nil {
			tick.Stop()
		}
	}()
	for first := true; ; first = false {
		q.mu.Lock()
		over := q.over
		if len(q.queue) >= n || over {
			k := min(n, len(q.queue))
			cs, q.queue = q.queue[:k:k], q.queue[k:]
			last = over && len(q.queue) == 0
			q.mu.Unlock()
			return cs, last
		}
		q.mu.Unlock()
		if first {
			q.interrupt(n)
		}
		var ticks <-chan time.Time
		if q.next < len(q.snap) {
			if tick == nil {
				tick = time.NewTimer(interruptTick)
			} else {
				tick.Reset(interruptTick)
			}
			ticks = tick.C
		}
		left := q.left.Load()
		select {
		case <-q.kick:
		case <-ticks:
			if q.left.Load() == left {
				q.interrupt(n)
			}
		case <-q.all:
			q.end()
		case <-q.timer.C:
			if late := q.end(); late > 0 {
				q.log.Info("graceful: connections did not reach a message boundary in time; they stay", slog.Int("count", late))
			}
		}
	}
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
	cs, _ := t.startQuiesce(0, wait, log).take(math.MaxInt)
	return cs
}

var aLongTimeAgo = time.Unix(1, 0)

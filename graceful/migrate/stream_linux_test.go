//go:build linux

package migrate

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/fdpass/fdpass/internal/fdtest"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/kinds"
	"github.com/fdpass/fdpass/unixmsg"
	"golang.org/x/sys/unix"
)

// streamSide is a predecessor's end of n tracked connections, in this
// process: the first n-stuck have a reader that echoes each line and hands
// its connection off at a line boundary, the others have none (their
// reader never comes back). handedOff receives what each Handoff returned,
// before the reader reads on.
type streamSide struct {
	t         *Tracker
	quiesce   time.Duration
	conns     []*Conn
	peers     []int
	handedOff chan bool
}

func newStreamSide(t *testing.T, n, stuck int, quiesce time.Duration) *streamSide {
	t.Helper()
	s := &streamSide{
		t:         new(Tracker),
		quiesce:   quiesce,
		handedOff: make(chan bool, n),
	}
	for i := range n {
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		s.peers = append(s.peers, sp[1])
		nc, err := streamConn(sp[0], kinds.UnixConn)
		if err != nil {
			unix.Close(sp[0])
			t.Fatal(err)
		}
		c := s.t.Track(nc, nil)
		s.conns = append(s.conns, c)
		if i >= n-stuck {
			continue
		}
		state := []byte("state " + strconv.Itoa(i))
		go func() {
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if errors.Is(err, ErrMigrating) {
					ok := c.HandoffReader(state, r, []byte(line))
					s.handedOff <- ok
					if ok {
						return
					}
					continue
				}
				if err != nil {
					return
				}
				if _, err := c.Write([]byte(line)); err != nil {
					return
				}
			}
		}()
	}
	t.Cleanup(func() {
		for _, c := range s.conns {
			c.Close()
		}
		for _, fd := range s.peers {
			unix.Close(fd)
		}
	})
	return s
}

// send runs the predecessor's side of a migration, in batches of 16.
func (s *streamSide) send(c *unixmsg.Conn, stream bool) (*Outgoing, error) {
	return s.t.send(c, SendOptions{Stream: stream, Quiesce: s.quiesce}, 16)
}

// results collects n Handoff results, failing after a deadline.
func (s *streamSide) results(t *testing.T, n int) (migrated, stayed int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for range n {
		select {
		case ok := <-s.handedOff:
			if ok {
				migrated++
			} else {
				stayed++
			}
		case <-deadline:
			t.Fatalf("%d readers of %d returned from Handoff", migrated+stayed, n)
		}
	}
	return migrated, stayed
}

// handedOffSoFar counts the Handoff results that wait in handedOff,
// without waiting for more.
func (s *streamSide) handedOffSoFar() (migrated, stayed int) {
	for {
		select {
		case ok := <-s.handedOff:
			if ok {
				migrated++
			} else {
				stayed++
			}
		default:
			return migrated, stayed
		}
	}
}

// echoes checks that the first n connections are served here: a line
// written to each one's peer comes back from its reader.
func (s *streamSide) echoes(t *testing.T, n int) {
	t.Helper()
	const ping = "ping\n"
	for i, fd := range s.peers[:n] {
		if _, err := unix.Write(fd, []byte(ping)); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 64)
	for i, fd := range s.peers[:n] {
		var got []byte
		for len(got) < len(ping) {
			left := time.Until(deadline)
			if left <= 0 {
				t.Fatalf("connection %d: %q came back, want %q", i, got, ping)
			}
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if _, err := unix.Poll(pfd, int(left/time.Millisecond)+1); err != nil && err != unix.EINTR {
				t.Fatal(err)
			}
			k, err := unix.Read(fd, buf)
			if err == unix.EAGAIN {
				continue
			}
			if err != nil || k == 0 {
				t.Fatalf("connection %d: read %d bytes, %v, after %q", i, k, err, got)
			}
			got = append(got, buf[:k]...)
		}
		if string(got) != ping {
			t.Fatalf("connection %d: %q came back, want %q", i, got, ping)
		}
	}
}

// handoffPair returns the two ends of a handoff connection, the
// predecessor's first, each with a deadline 30 s away; they are closed
// when the test ends.
func handoffPair(t *testing.T, opts *unixmsg.Options) (*unixmsg.Conn, *unixmsg.Conn) {
	t.Helper()
	pc, sc, err := unixmsg.Pair(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*unixmsg.Conn{pc, sc} {
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(30 * time.Second))
	}
	return pc, sc
}

// awaitIdle waits until every connection is back with its reader.
func (s *streamSide) awaitIdle(t *testing.T, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for _, c := range s.conns {
		for {
			c.mu.Lock()
			phase := c.phase
			c.mu.Unlock()
			if phase == phaseIdle {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %v a connection is still in phase %d", limit, phase)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// connsBatch is what a successor saw of one CONNS batch.
type connsBatch struct {
	items, total uint32
	names        []string
}

// fakeAdopter receives CONNS batches on c until the announced total has
// arrived (or hangUp batches, then hangs up), answers ADOPTED, and
// reports the batches.
func fakeAdopter(c *unixmsg.Conn, hangUp int) <-chan []connsBatch {
	done := make(chan []connsBatch, 1)
	go func() {
		var seen []connsBatch
		defer func() { done <- seen }()
		have := uint32(0)
		for {
			if hangUp > 0 && len(seen) == hangUp {
				c.Close()
				return
			}
			b, err := c.Receive()
			if err != nil {
				return
			}
			m, err := handoffmsg.Parse(b.Payload())
			cb := connsBatch{items: m.Items, total: m.Total}
			for _, it := range b.Items() {
				cb.names = append(cb.names, it.Name)
			}
			b.Close()
			if err != nil {
				return
			}
			seen = append(seen, cb)
			have += m.Items
			if m.Total != handoffmsg.ConnsMore && have >= m.Total {
				handoffmsg.Send(c, handoffmsg.Message{Type: handoffmsg.MsgAdopted, Items: have})
				return
			}
		}
	}()
	return done
}

// TestStreamConns runs the predecessor's side of a streamed migration in
// this process, in batches of 16: every batch but the last says more
// follow, the last says how many there were, names run on across
// batches, readers that never arrive stay, and a successor that hangs up
// midway gets everything resumed without waiting for the quiesce timeout.
func TestStreamConns(t *testing.T) {
	for _, tc := range []struct {
		name    string
		n       int
		stuck   int
		quiesce time.Duration
		hangUp  int  // batches the successor takes before it hangs up
		whole   bool // not streamed: every batch says the total
	}{
		{"all", 100, 0, 10 * time.Second, 0, false},
		{"late readers", 40, 8, 300 * time.Millisecond, 0, false},
		// More stuck than the two batches interrupted ahead: the others
		// are interrupted anyway, and move.
		{"many stuck", 100, 40, time.Second, 0, false},
		{"successor hangs up", 40, 8, time.Minute, 1, false},
		{"not streamed", 100, 8, 300 * time.Millisecond, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fdtest.CheckLeaks(t)
			s := newStreamSide(t, tc.n, tc.stuck, tc.quiesce)
			pc, sc := handoffPair(t, &unixmsg.Options{NoAck: true})
			seen := fakeAdopter(sc, tc.hangUp)
			start := time.Now()
			out, err := s.send(pc, !tc.whole)
			took := time.Since(start)
			batches := <-seen
			moving := tc.n - tc.stuck
			if tc.hangUp > 0 {
				if err == nil {
					t.Fatal("migrateOut succeeded with a successor that hung up")
				}
				if took > 10*time.Second {
					t.Errorf("migrateOut took %v to give up", took)
				}
				// Readers not interrupted yet never reach Handoff; every
				// connection is back to serving.
				s.awaitIdle(t, 10*time.Second)
				// The readers of the connections sent in the batch the
				// successor took reached Handoff, and others may have:
				// each is told that its connection stayed.
				sent := 0
				for _, b := range batches {
					sent += len(b.names)
				}
				if sent == 0 {
					t.Fatal("the successor took no connection before it hung up")
				}
				if migrated, _ := s.results(t, sent); migrated != 0 {
					t.Fatalf("Handoff returned true for %d of the %d connections sent", migrated, sent)
				}
				// Each reader serves its connection again, so every
				// Handoff has returned.
				s.echoes(t, moving)
				migrated, stayed := s.handedOffSoFar()
				if migrated != 0 || sent+stayed > moving {
					t.Errorf("Handoff returned true %d times and false %d times after the %d connections sent; want false only, for at most %d readers in all",
						migrated, stayed, sent, moving)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			out.Commit()
			if migrated, stayed := s.results(t, moving); migrated != moving || stayed != 0 {
				t.Errorf("%d migrated, %d stayed; want %d and 0", migrated, stayed, moving)
			}
			var names []string
			for i, b := range batches {
				last := i == len(batches)-1
				switch {
				case tc.whole && (b.total != uint32(moving) || !last && b.items != 16):
					t.Errorf("batch %d: %d connections of %d, want 16 (or the rest) of %d", i, b.items, b.total, moving)
				case tc.whole:
				case !last && (b.total != handoffmsg.ConnsMore || b.items != 16):
					t.Errorf("batch %d: %d connections of %d, want 16 with more to follow", i, b.items, b.total)
				case last && b.total != uint32(moving):
					t.Errorf("last batch: %d connections of %d, want a total of %d", b.items, b.total, moving)
				}
				names = append(names, b.names...)
			}
			for i, name := range names {
				if name != strconv.Itoa(i) {
					t.Fatalf("connection %d is named %q", i, name)
				}
			}
			if len(names) != moving {
				t.Errorf("%d connections sent, want %d", len(names), moving)
			}
			// The stuck ones stayed, and serve on.
			for _, c := range s.conns[moving:] {
				c.mu.Lock()
				phase := c.phase
				c.mu.Unlock()
				if phase != phaseIdle {
					t.Errorf("a connection that never quiesced is in phase %d", phase)
				}
			}
		})
	}
}

// TestStreamAdopt runs both sides of a streamed migration in this process:
// the successor adopts every connection, with its state, from batches of
// 16.
func TestStreamAdopt(t *testing.T) {
	fdtest.CheckLeaks(t)
	const n = 100
	s := newStreamSide(t, n, 0, 10*time.Second)
	next := new(Tracker)
	pc, sc := handoffPair(t, &unixmsg.Options{NoAck: true})
	type adopted struct {
		conns []*Conn
		err   error
	}
	in := make(chan adopted, 1)
	go func() {
		cs, err := next.Receive(sc, ReceiveOptions{Stream: true})
		in <- adopted{cs, err}
	}()
	out, err := s.send(pc, true)
	if err != nil {
		t.Fatal(err)
	}
	got := <-in
	if got.err != nil {
		t.Fatal(got.err)
	}
	out.Commit()
	if migrated, _ := s.results(t, n); migrated != n {
		t.Errorf("%d of %d handed off", migrated, n)
	}
	states := map[string]bool{}
	for _, c := range got.conns {
		states[string(c.State())] = true
		c.Close()
	}
	for i := range n {
		if !states[fmt.Sprintf("state %d", i)] {
			t.Errorf("state of connection %d did not arrive", i)
		}
	}
	if len(got.conns) != n {
		t.Errorf("%d connections adopted, want %d", len(got.conns), n)
	}
}

// TestStreamEarlyAnswer: a successor that answers ADOPTED after the first
// batch, out of turn, and then reads no more gets an ERROR, but only once
// every connection is back with its reader: the predecessor's wait for
// the ERROR's acknowledgement holds up nobody.
func TestStreamEarlyAnswer(t *testing.T) {
	fdtest.CheckLeaks(t)
	s := newStreamSide(t, 40, 8, time.Minute)
	pc, sc := handoffPair(t, nil)
	answered := make(chan error, 1)
	go func() {
		b, err := sc.Receive()
		if err != nil {
			answered <- err
			return
		}
		b.Close()
		var m unixmsg.Batch
		payload, _ := handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgAdopted, Items: 16})
		m.SetPayload(payload)
		answered <- sc.SendNoAck(context.Background(), &m)
	}()
	res := make(chan error, 1)
	go func() {
		_, err := s.send(pc, true)
		res <- err
	}()
	if err := <-answered; err != nil {
		t.Fatal(err)
	}
	s.awaitIdle(t, 5*time.Second)
	select {
	case err := <-res:
		if !errors.Is(err, handoffmsg.ErrMalformed) {
			t.Errorf("migrateOut: %v, want handoffmsg.ErrMalformed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("migrateOut did not return")
	}
}

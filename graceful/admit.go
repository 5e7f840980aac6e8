package graceful

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/unixmsg"
)

// Admission: who is heard on the handoff socket, when, and for how long.
// Every peer that connects is taken up at once, each on its own
// goroutine, so that a slow or idle one holds up nobody: its first message
// must come within helloWait and is read with control limits (no
// descriptors, a few KiB), so that a peer that is not admitted costs one
// small message. Then its credentials are checked for the role its message
// asks for: a successor's HELLO waits in a queue of at most maxQueued for
// its turn (handoffs take turns, predecessor.go); a request to upgrade is
// served on its own (upgrade.go).
const (
	// helloWait bounds the wait for a peer's first message.
	helloWait = 2 * time.Second
	// maxQueued bounds the successors that wait for their turn.
	maxQueued = 4
	// refuseLinger bounds how long a refused peer may keep its
	// connection.
	refuseLinger = time.Second
)

// controlOptions are the options of a Conn on which only control messages
// travel: the predecessor's end of a handoff, and both ends of an upgrade
// request. No message of theirs carries a descriptor.
func controlOptions(noAck bool) *unixmsg.Options {
	// What such a Conn sends (an OFFER, say) is bounded as usual.
	return &unixmsg.Options{NoAck: noAck, Limits: handoffmsg.ControlLimits(), SendLimits: unixmsg.DefaultLimits()}
}

// candidate is a successor that said HELLO and waits for its turn.
type candidate struct {
	c     *unixmsg.Conn
	peer  Peer
	hello handoffmsg.Message
	log   *slog.Logger
}

// serve answers the peers of the handoff socket until a successor takes
// over or the Process closes.
func (p *Process) serve(done chan struct{}) {
	defer close(done)
	// Duplicate what the next successor will get before it asks, so that
	// its handoff costs it little.
	if _, err := p.prepare(); err != nil {
		return
	}
	p.mu.Lock()
	ln := p.ln
	p.mu.Unlock()
	if ln == nil {
		return
	}
	queue := make(chan *candidate, maxQueued)
	stop := make(chan struct{})
	taken := make(chan struct{})
	go func() {
		defer close(taken)
		for cand := range queue {
			if p.handoff(cand) {
				close(stop)
				break
			}
		}
		// Those still waiting try again, with the successor.
		for cand := range queue {
			cand.c.Close()
		}
	}()
	acceptLoop(ln, p.log, "handoff socket", func(uc *net.UnixConn) {
		if !p.track(uc) {
			uc.Close()
			return
		}
		p.peers.Go(func() {
			defer p.untrack(uc)
			p.admit(uc, queue, stop)
		})
	})
	p.peers.Wait()
	close(queue)
	<-taken
}

// acceptLoop accepts on ln and hands each connection to serve, until ln is
// closed.
//
// It keeps a descriptor in reserve: a process out of descriptors (a flood
// of connections holds them all) closes it to accept the peer at once,
// rather than wait until the flood ends for a descriptor that its own
// listeners, retrying, are as likely to take. A successor that takes over
// is what relieves such a process.
func acceptLoop(ln *net.UnixListener, log *slog.Logger, what string, serve func(*net.UnixConn)) {
	var b acceptBackoff
	var r reserve
	r.refill(1)
	defer r.release()
	for {
		uc, err := ln.AcceptUnix()
		if err != nil && outOfDescriptors(err) && r.release() {
			uc, err = ln.AcceptUnix()
		}
		r.refill(1)
		if err != nil {
			if !b.retry(err, log, what) {
				return
			}
			continue
		}
		b.reset()
		serve(uc)
	}
}

// reserve is descriptors kept open (/dev/null, close-on-exec) to be
// closed when some are needed.
type reserve []int

// refill opens reserve descriptors until there are n; out of
// descriptors, it stops there until the next try. All but the first are
// duplicates of it: a third of the time of opening /dev/null again.
func (r *reserve) refill(n int) {
	for len(*r) < n {
		var f int
		var err error
		if len(*r) == 0 {
			f, err = syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		} else {
			f, err = fd.DupFD((*r)[0])
		}
		if err != nil {
			return
		}
		*r = append(*r, f)
	}
}

// release closes the reserve descriptors and reports whether there were
// any.
func (r *reserve) release() bool {
	if len(*r) == 0 {
		return false
	}
	fd.CloseAll(*r)
	*r = (*r)[:0]
	return true
}

// outOfDescriptors reports whether err says that the process (EMFILE) or
// the system (ENFILE) has no descriptor left.
func outOfDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// acceptBackoff keeps an accept loop alive through errors: only a closed
// listener ends it. Out of descriptors (EMFILE, ENFILE), out of memory
// (ENOBUFS, ENOMEM), a connection aborted in the backlog (ECONNABORTED),
// anything else: it waits, twice as long each time up to a second, so
// that the process frees what it can, and says so once in the log.
type acceptBackoff struct{ delay time.Duration }

// retry waits after err and reports whether to accept again.
func (b *acceptBackoff) retry(err error, log *slog.Logger, what string) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	if b.delay == 0 {
		log.Warn("graceful: accept failed; retrying", slog.String("on", what), slog.Any("error", err))
	}
	b.delay = min(max(2*b.delay, 5*time.Millisecond), time.Second)
	time.Sleep(b.delay)
	return true
}

// reset starts over after a connection was accepted.
func (b *acceptBackoff) reset() {
	b.delay = 0
}

// track adds uc to the connections Close closes, unless the Process is
// closed.
func (p *Process) track(uc *net.UnixConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	if p.conns == nil {
		p.conns = make(map[*net.UnixConn]struct{})
	}
	p.conns[uc] = struct{}{}
	return true
}

func (p *Process) untrack(uc *net.UnixConn) {
	p.mu.Lock()
	delete(p.conns, uc)
	p.mu.Unlock()
}

// admit reads a peer's first message and sends it where its role says:
// a successor to the queue, a request to upgrade to serveRequest. It takes
// ownership of uc.
func (p *Process) admit(uc *net.UnixConn, queue chan<- *candidate, stop <-chan struct{}) {
	peer, err := peerCredentials(uc)
	if err != nil {
		uc.Close()
		p.log.Warn("graceful: dropped a peer of the handoff socket", slog.Any("error", err))
		return
	}
	log := p.log.With(slog.Int("pid", peer.PID), slog.Uint64("uid", uint64(peer.UID)))
	c, err := unixmsg.NewConn(uc, controlOptions(false))
	if err != nil {
		uc.Close()
		log.Warn("graceful: dropped a peer of the handoff socket", slog.Any("error", err))
		return
	}
	c.SetDeadline(time.Now().Add(helloWait))
	m, err := handoffmsg.Receive(c)
	if err != nil {
		switch {
		case errors.Is(err, io.EOF):
			// A health check, most likely.
			log.Debug("graceful: peer hung up without a word")
		case errors.Is(err, os.ErrDeadlineExceeded):
			log.Warn("graceful: dropped a peer that said nothing", slog.Duration("within", helloWait))
		case isDisconnect(err):
			log.Warn("graceful: dropped a peer that hung up", slog.Any("error", err))
		default:
			log.Warn("graceful: dropped a peer that does not speak the handoff protocol", slog.Any("error", err))
			p.refuse(c, handoffmsg.CodeProtocol, err.Error())
			return
		}
		c.Close()
		return
	}
	switch m.Type {
	case handoffmsg.MsgHello:
		peer.Role = RoleSuccessor
	case handoffmsg.MsgUpgrade:
		peer.Role = RoleRequester
	default:
		err := handoffmsg.Errf(ErrMalformed, "%s as a first message", m.Type)
		log.Warn("graceful: dropped a peer", slog.Any("error", err))
		p.refuse(c, handoffmsg.CodeProtocol, err.Error())
		return
	}
	if err := p.authorize(peer); err != nil {
		log.Warn("graceful: refused "+peer.Role.String(), slog.Any("error", err))
		if peer.Role == RoleSuccessor {
			p.settle(peer.PID, err)
		}
		p.refuse(c, handoffmsg.CodeUnauthorized, err.Error())
		return
	}
	if peer.Role == RoleRequester {
		p.serveRequest(c, peer, log)
		return
	}
	cand := &candidate{c: c, peer: peer, hello: m, log: log}
	select {
	case <-stop:
		c.Close()
	case queue <- cand:
	default:
		log.Warn("graceful: refused successor: too many waiting", slog.Int("waiting", maxQueued))
		p.settle(peer.PID, errors.New("refused: too many successors waiting"))
		p.refuse(c, handoffmsg.CodeAborted, "too many successors waiting")
	}
}

// refuse sends ERROR, waits a little for the peer to hang up (so that a
// message it sends meanwhile does not fail before it reads why), and
// closes c.
func (p *Process) refuse(c *unixmsg.Conn, code handoffmsg.ErrorCode, reason string) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(refuseLinger))
	if len(reason) > handoffmsg.MaxReasonLen {
		reason = reason[:handoffmsg.MaxReasonLen]
	}
	if b, err := handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgError, Code: code, Reason: reason}); err == nil {
		// Not acknowledged: a refused peer is not listened to.
		var batch unixmsg.Batch
		batch.SetPayload(b)
		c.SendNoAck(context.Background(), &batch)
	}
	linger(c)
}

// linger drops what the peer sends until it hangs up or the deadline
// passes. It reads the socket itself, with no control buffer: descriptors
// in what is dropped are closed by the kernel, and nothing is decoded.
func linger(c *unixmsg.Conn) {
	buf := make([]byte, 512)
	for {
		if _, err := c.UnixConn().Read(buf); err != nil {
			return
		}
	}
}

package graceful

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/fdpass/fdpass/graceful/migrate"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/unixmsg"
)

// The predecessor's side of a handoff: from Ready on, serve answers the
// successors that dial the handoff socket, one at a time; handoff checks a
// successor and offer runs the exchange with it, from HELLO to DONE,
// moving the tracked connections (graceful/migrate) in between when both
// sides asked for them. Until DONE is acknowledged nothing changes here.

// prepare returns the batch of everything registered, adding what was
// registered since the last call. The batch holds duplicates, built before
// a successor asks so that the handoff itself costs little.
func (p *Process) prepare() (*unixmsg.Batch, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, net.ErrClosed
	}
	if p.out == nil {
		p.out = new(unixmsg.Batch)
	}
	for ; p.outN < len(p.regs); p.outN++ {
		r := p.regs[p.outN]
		if err := p.out.Add(strconv.Itoa(p.out.Len()), r.v, r.meta, nil); err != nil {
			// Closed by its owner before it could be duplicated: it is
			// not handed over.
			p.log.Warn("graceful: descriptor left out of the handoff",
				slog.String("addr", r.meta.Value(handoffmsg.MetaAddr)), slog.Any("error", err))
		}
	}
	return p.out, nil
}

// serve answers successors, one at a time, until one takes over or the
// Process closes.
func (p *Process) serve(done chan struct{}) {
	defer close(done)
	// Duplicate what the next successor will get before it asks, so that
	// its handoff costs it little; it waits in the backlog meanwhile.
	if _, err := p.prepare(); err != nil {
		return
	}
	p.mu.Lock()
	ln := p.ln
	p.mu.Unlock()
	if ln == nil {
		return
	}
	for {
		uc, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			p.log.Warn("graceful: accept on handoff socket", slog.Any("error", err))
			// EMFILE and the like: wait for descriptors to free up.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if p.handoff(uc) {
			return
		}
	}
}

// handoff serves one successor and reports whether it took over. It takes
// ownership of uc.
func (p *Process) handoff(uc *net.UnixConn) bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		uc.Close()
		return false
	}
	p.cur = uc
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.cur = nil
		p.mu.Unlock()
	}()
	start := time.Now()
	uc.SetDeadline(start.Add(p.opts.Timeout))
	peer, err := peerCredentials(uc)
	if err == nil {
		peer.Role = RoleSuccessor
		err = p.authorize(peer)
	}
	log := p.log.With(slog.Int("pid", peer.PID), slog.Uint64("uid", uint64(peer.UID)))
	if err != nil {
		log.Warn("graceful: refused successor", slog.Any("error", err))
		// Not in turn: a refused peer must not hold up the next one.
		p.refusing.Go(func() { refuse(uc, handoffmsg.CodeUnauthorized, err.Error()) })
		return false
	}
	p.systemdHandoff()
	defer func() {
		if !p.HandedOff() {
			p.systemdRollback()
		}
	}()
	c, err := unixmsg.NewConn(uc, nil)
	if err != nil {
		uc.Close()
		log.Warn("graceful: handoff connection", slog.Any("error", err))
		return false
	}
	keep := false
	defer func() {
		if !keep {
			c.Close()
		}
	}()
	err = p.offer(c, log, peer.PID)
	if err == errNoHello {
		// A health check, most likely: nothing to roll back.
		log.Debug("graceful: peer hung up before HELLO")
		return false
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Tell a successor that is merely slow why it lost, out of
			// turn: the next successor need not wait for it.
			keep = true
			reason := fmt.Sprintf("handoff not finished within %v", p.opts.Timeout)
			p.refusing.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(refuseLinger))
				handoffmsg.SendError(c, handoffmsg.CodeTimeout, reason)
				linger(c)
			})
		}
		log.Warn("graceful: handoff rolled back; still serving", slog.Any("error", err), slog.Duration("after", time.Since(start)))
		return false
	}
	p.mu.Lock()
	p.handedOff = true
	ln, out := p.ln, p.out
	p.ln, p.out, p.regs = nil, nil, nil
	p.mu.Unlock()
	// The successor holds its own copies now.
	ln.Close()
	if out != nil {
		out.Close()
	}
	log.Info("graceful: successor took over", slog.Duration("took", time.Since(start)))
	p.closeExit()
	return true
}

// errNoHello: the peer hung up without a word.
var errNoHello = errors.New("graceful: peer hung up before HELLO")

// offer runs the predecessor's side of one handoff, from HELLO to DONE. It
// changes nothing of the Process unless it returns nil.
func (p *Process) offer(c *unixmsg.Conn, log *slog.Logger, pid int) error {
	hello, err := handoffmsg.Receive(c)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return errNoHello
		}
		if !isDisconnect(err) && !errors.Is(err, os.ErrDeadlineExceeded) {
			handoffmsg.SendError(c, handoffmsg.CodeProtocol, err.Error())
		}
		return err
	}
	if hello.Type != handoffmsg.MsgHello {
		err := handoffmsg.Errf(ErrMalformed, "%s where HELLO was due", hello.Type)
		handoffmsg.SendError(c, handoffmsg.CodeProtocol, err.Error())
		return err
	}
	if hello.MinVersion > handoffmsg.Version || hello.MaxVersion < handoffmsg.Version {
		err := handoffmsg.Errf(ErrVersion, "successor speaks versions %d-%d, this process %d", hello.MinVersion, hello.MaxVersion, handoffmsg.Version)
		handoffmsg.SendError(c, handoffmsg.CodeVersion, err.Error())
		return err
	}
	out, err := p.prepare()
	if err != nil {
		handoffmsg.SendError(c, handoffmsg.CodeAborted, err.Error())
		return err
	}
	p.mu.Lock()
	gen := p.gen
	p.mu.Unlock()
	payload, err := handoffmsg.Append(nil, handoffmsg.Message{
		Type:          handoffmsg.MsgOffer,
		Version:       handoffmsg.Version,
		Features:      hello.Features & p.features(),
		Generation:    gen,
		Items:         uint32(out.Len()),
		TimeoutMillis: uint32(min(p.opts.Timeout.Milliseconds(), 1<<32-1)),
	})
	if err != nil {
		return err
	}
	out.SetPayload(payload)
	if err := c.Send(out); err != nil {
		return fmt.Errorf("sending descriptors: %w", err)
	}
	log.Debug("graceful: sent descriptors; waiting for READY", slog.Int("descriptors", out.Len()))
	m, err := handoffmsg.Receive(c)
	if err != nil {
		return fmt.Errorf("waiting for READY: %w", err)
	}
	if err := m.Expect(handoffmsg.MsgReady); err != nil {
		if m.Type != handoffmsg.MsgError {
			handoffmsg.SendError(c, handoffmsg.CodeProtocol, err.Error())
		}
		return err
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		handoffmsg.SendError(c, handoffmsg.CodeAborted, "predecessor is closing")
		return net.ErrClosed
	}
	p.systemdTakeover(pid)
	// Live migration, when both asked for it: the connections move now,
	// and stay this process's until DONE is acknowledged.
	var mig *migrate.Outgoing
	both := m.Features & hello.Features & p.features()
	if both&handoffmsg.FeatureMigrate != 0 {
		mig, err = p.mig.Send(c, migrate.SendOptions{
			Stream:  both&handoffmsg.FeatureStreamConns != 0,
			Quiesce: p.quiesceTimeout(),
			Logger:  log,
		})
		if err != nil {
			return err
		}
	} else {
		// DONE names the second phase that took place, if any.
		both = 0
		if p.opts.Migrate {
			log.Warn("graceful: the successor does not migrate connections (no Options.Migrate there); they stay and drain")
		}
	}
	// DONE is acknowledged: once Send returns nil the successor has it,
	// and this process may stop.
	if err := handoffmsg.Send(c, handoffmsg.Message{Type: handoffmsg.MsgDone, Features: both}); err != nil {
		// Hang up before resuming, so that a successor still about to
		// acknowledge DONE fails to, and does not serve them too.
		c.Close()
		mig.Resume()
		return fmt.Errorf("sending DONE: %w", err)
	}
	mig.Commit()
	return nil
}

// refuse sends ERROR without waiting for an acknowledgement, waits a
// little for the peer to hang up (so that its HELLO, sent meanwhile, does
// not fail before it reads why), and closes uc.
func refuse(uc *net.UnixConn, code handoffmsg.ErrorCode, reason string) {
	c, err := unixmsg.NewConn(uc, &unixmsg.Options{NoAck: true})
	if err != nil {
		uc.Close()
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(refuseLinger))
	handoffmsg.SendError(c, code, reason)
	linger(c)
}

// linger reads and drops what the peer sends until it hangs up or the
// deadline passes, so that a message it sends meanwhile does not fail
// before it reads an ERROR.
func linger(c *unixmsg.Conn) {
	for {
		b, err := c.Receive()
		if err != nil {
			break
		}
		b.Close()
	}
	// The Conn may be broken (the peer's READY crossed our ERROR): drain
	// the socket itself. Descriptors in what is dropped are closed by the
	// kernel, since no control buffer takes them.
	buf := make([]byte, 512)
	for {
		if _, err := c.UnixConn().Read(buf); err != nil {
			return
		}
	}
}

// refuseLinger bounds how long a refused peer may keep its connection.
const refuseLinger = time.Second

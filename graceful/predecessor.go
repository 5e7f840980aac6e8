package graceful

import (
	"errors"
	"fmt"
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
		err := p.out.Add(strconv.Itoa(p.out.Len()), r.v, r.meta, nil)
		if outOfDescriptors(err) && p.spare.release() {
			// A flood of connections holds every other descriptor:
			// a listener left out would not reach the successor.
			err = p.out.Add(strconv.Itoa(p.out.Len()), r.v, r.meta, nil)
			p.spare.refill(spareFDs)
		}
		if err != nil {
			// Closed by its owner before it could be duplicated: it is
			// not handed over.
			p.log.Warn("graceful: descriptor left out of the handoff",
				slog.String("addr", r.meta.Value(handoffmsg.MetaAddr)), slog.Any("error", err))
		}
	}
	return p.out, nil
}

// handoff serves one successor that said HELLO, and reports whether it
// took over. It takes ownership of cand.c. The handoff must end within
// Options.Timeout of now, when the successor's turn came.
func (p *Process) handoff(cand *candidate) bool {
	c, log := cand.c, cand.log
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.Close()
		return false
	}
	p.mu.Unlock()
	start := time.Now()
	c.SetDeadline(start.Add(p.opts.Timeout))
	p.hear(cand.peer.PID)
	p.systemdHandoff()
	mig, err := p.offer(c, cand.hello, log, cand.peer.PID)
	if err != nil {
		defer p.settle(cand.peer.PID, err)
		p.systemdRollback()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Tell a successor that is merely slow why it lost, out of
			// turn: the next successor need not wait for it.
			reason := fmt.Sprintf("handoff not finished within %v", p.opts.Timeout)
			p.peers.Go(func() { p.refuse(c, handoffmsg.CodeTimeout, reason) })
		} else {
			c.Close()
		}
		log.Warn("graceful: handoff rolled back; still serving", slog.Any("error", err), slog.Duration("after", time.Since(start)))
		return false
	}
	p.systemdTookOver()
	p.mu.Lock()
	p.handedOff = true
	p.successor = cand.peer.PID
	ln, out := p.ln, p.out
	p.ln, p.out, p.regs = nil, nil, nil
	p.mu.Unlock()
	// The successor holds its own copies now.
	ln.Close()
	if out != nil {
		out.Close()
	}
	log.Info("graceful: successor took over", slog.Duration("took", time.Since(start)))
	p.reportServing(cand.peer.PID)
	// The verdict before Exit: the program may close the Process as soon
	// as Exit closes, and Upgrade must not take that for a failure.
	p.settle(cand.peer.PID, nil)
	p.closeExit()
	// The connections whose readers were busy move as they stop (or stay,
	// after the quiesce timeout, or Close).
	if n, err := mig.Late(c, p.closing); err != nil {
		log.Warn("graceful: connections stay after a failed late migration", slog.Int("moved", n), slog.Any("error", err))
	} else if n > 0 {
		log.Info("graceful: connections moved after the takeover", slog.Int("count", n))
	}
	return true
}

// offer runs the predecessor's side of one handoff, from the OFFER to
// DONE. It changes nothing of the Process unless it returns nil; then the
// migration, committed, may go on after DONE (Outgoing.Late).
func (p *Process) offer(c *unixmsg.Conn, hello handoffmsg.Message, log *slog.Logger, pid int) (*migrate.Outgoing, error) {
	if hello.MinVersion > handoffmsg.Version || hello.MaxVersion < handoffmsg.Version {
		err := handoffmsg.Errf(ErrVersion, "successor speaks versions %d-%d, this process %d", hello.MinVersion, hello.MaxVersion, handoffmsg.Version)
		handoffmsg.SendError(c, handoffmsg.CodeVersion, err.Error())
		return nil, err
	}
	out, err := p.prepare()
	if err != nil {
		handoffmsg.SendError(c, handoffmsg.CodeAborted, err.Error())
		return nil, err
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
		return nil, err
	}
	out.SetPayload(payload)
	if err := c.Send(out); err != nil {
		return nil, fmt.Errorf("sending descriptors: %w", err)
	}
	log.Debug("graceful: sent descriptors; waiting for READY", slog.Int("descriptors", out.Len()))
	m, err := handoffmsg.Receive(c)
	if err != nil {
		return nil, fmt.Errorf("waiting for READY: %w", err)
	}
	if err := m.Expect(handoffmsg.MsgReady); err != nil {
		if m.Type != handoffmsg.MsgError {
			handoffmsg.SendError(c, handoffmsg.CodeProtocol, err.Error())
		}
		return nil, err
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		handoffmsg.SendError(c, handoffmsg.CodeAborted, "predecessor is closing")
		return nil, net.ErrClosed
	}
	// Live migration, when both asked for it: the connections move now,
	// and stay this process's until DONE is acknowledged.
	var mig *migrate.Outgoing
	both := m.Features & hello.Features & p.features()
	if both&handoffmsg.FeatureMigrate != 0 {
		stream := both&handoffmsg.FeatureStreamConns != 0
		if !stream {
			both &^= handoffmsg.FeatureLateConns
		}
		most := 0
		if both&handoffmsg.FeatureCapacity != 0 {
			if most, err = p.receiveCapacity(c); err != nil {
				return nil, err
			}
			both &^= handoffmsg.FeatureCapacity
		}
		mig, err = p.mig.Send(c, migrate.SendOptions{
			Stream:  stream,
			Late:    both&handoffmsg.FeatureLateConns != 0,
			Quiesce: p.quiesceTimeout(),
			Most:    most,
			Logger:  log,
		})
		if err != nil {
			return nil, err
		}
	} else {
		// DONE names the second phase that took place, if any.
		both = 0
		if p.opts.Migrate {
			if hello.Features&p.features()&handoffmsg.FeatureCapacity != 0 {
				// It announced the phase, then did not ask for it: no
				// room under its descriptor limit.
				log.Warn("graceful: the successor has no room for connections; they stay and drain")
			} else {
				log.Warn("graceful: the successor does not migrate connections (no Options.Migrate there); they stay and drain")
			}
		}
	}
	// systemd follows the successor from here on: its READY=1 comes
	// after DONE. A failure from here on names this process again.
	p.systemdTakeover(pid)
	// DONE is acknowledged: once Send returns nil the successor has it,
	// and this process may stop.
	if err := handoffmsg.Send(c, handoffmsg.Message{Type: handoffmsg.MsgDone, Features: both}); err != nil {
		// Hang up before resuming, so that a successor still about to
		// acknowledge DONE fails to, and does not serve them too.
		c.Close()
		mig.Resume()
		return nil, fmt.Errorf("sending DONE: %w", err)
	}
	mig.Commit()
	return mig, nil
}

// receiveCapacity reads the CAPACITY that follows a READY asking for
// FeatureCapacity: the most connections the successor takes.
func (p *Process) receiveCapacity(c *unixmsg.Conn) (int, error) {
	m, err := handoffmsg.Receive(c)
	if err == nil {
		err = m.Expect(handoffmsg.MsgCapacity)
		if err != nil && m.Type != handoffmsg.MsgError {
			handoffmsg.SendError(c, handoffmsg.CodeProtocol, err.Error())
		}
	}
	if err != nil {
		return 0, fmt.Errorf("waiting for CAPACITY: %w", err)
	}
	return int(min(m.Items, 1<<31-1)), nil
}

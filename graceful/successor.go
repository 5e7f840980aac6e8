package graceful

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/fdpass/fdpass/graceful/migrate"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/unixmsg"
)

// The successor's side of a handoff: inherit dials the predecessor, says
// HELLO and receives the OFFER (from New); confirm says READY, takes the
// migrating connections if both sides asked for them, and waits for DONE
// (from Ready). What the OFFER brought waits in an inheritance (adopt.go)
// for Listen and the others to adopt.

// inherit performs the successor's side of a handoff up to the OFFER. It
// takes ownership of uc.
func (p *Process) inherit(uc *net.UnixConn, deadline time.Time) error {
	uc.SetDeadline(deadline)
	peer, err := peerCredentials(uc)
	if err == nil {
		peer.Role = RolePredecessor
		err = p.authorize(peer)
	}
	if err != nil {
		uc.Close()
		return err
	}
	c, err := unixmsg.NewConn(uc, &unixmsg.Options{NoAck: true})
	if err != nil {
		uc.Close()
		return err
	}
	in, gen, err := p.hello(c)
	if err != nil {
		c.Close()
		if isDisconnect(err) {
			return fmt.Errorf("%w: %w", errRetry, err)
		}
		if errors.Is(err, unixmsg.ErrBadMagic) || errors.Is(err, handoffmsg.ErrBadMagic) {
			return fmt.Errorf("%w: %w", ErrAlreadyRunning, err)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("%w: no handoff within %v: %w", ErrAlreadyRunning, p.opts.Timeout, err)
		}
		// As Ready's: the predecessor's own errors (ErrRefused,
		// ErrVersion, ErrMalformed) still match, and a unixmsg one
		// matches a sentinel of this package too.
		return fmt.Errorf("%w: %w", ErrHandoff, err)
	}
	uc.SetDeadline(time.Time{})
	in.pred = c
	if in.pid == 0 {
		in.pid = peer.PID
	}
	p.gen = gen
	p.in = in
	p.inherited = true
	p.log.Info("graceful: received descriptors from predecessor",
		slog.Int("pid", in.pid), slog.Int("descriptors", in.batch.Len()), slog.Uint64("generation", p.gen))
	return nil
}

// hello sends HELLO and receives the OFFER. On success the handoff
// listener is p.ln, and the rest of the batch waits in the inheritance.
func (p *Process) hello(c *unixmsg.Conn) (*inheritance, uint64, error) {
	ours := p.features()
	if err := handoffmsg.Send(c, handoffmsg.Message{Type: handoffmsg.MsgHello, MinVersion: handoffmsg.Version, MaxVersion: handoffmsg.Version, Features: ours}); err != nil {
		return nil, 0, err
	}
	// While the predecessor prepares the OFFER.
	own := p.setUp(true)
	b, err := c.Receive()
	if err != nil {
		return nil, 0, err
	}
	m, err := handoffmsg.Parse(b.Payload())
	if err == nil {
		err = m.Expect(handoffmsg.MsgOffer)
	}
	if err == nil {
		switch {
		case m.Version != handoffmsg.Version:
			err = handoffmsg.Errf(ErrVersion, "predecessor chose version %d", m.Version)
		case int(m.Items) != b.Len():
			err = handoffmsg.Errf(ErrMalformed, "OFFER announces %d descriptors, %d arrived", m.Items, b.Len())
		}
	}
	var in *inheritance
	if err == nil {
		in, err = p.index(b, own)
	}
	if err != nil {
		b.Close()
		return nil, 0, err
	}
	both := m.Features & ours
	in.migrate = both&handoffmsg.FeatureMigrate != 0
	in.stream = in.migrate && both&handoffmsg.FeatureStreamConns != 0
	in.late = in.stream && both&handoffmsg.FeatureLateConns != 0
	in.capacity = in.migrate && both&handoffmsg.FeatureCapacity != 0
	return in, m.Generation + 1, nil
}

func isDisconnect(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, unixmsg.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// confirm sends READY on in.pred and waits for DONE, taking the migrating
// connections in between if both sides asked for them. late reports that
// more connections follow after DONE (receiveLate).
func (p *Process) confirm(in *inheritance) (late bool, err error) {
	c := in.pred
	c.SetDeadline(time.Now().Add(p.opts.Timeout))
	var ask uint32
	most := 0
	release := func() {}
	defer func() { release() }()
	if in.migrate {
		ask = handoffmsg.FeatureMigrate
		if in.stream {
			ask |= handoffmsg.FeatureStreamConns
		}
		if in.late {
			ask |= handoffmsg.FeatureLateConns
		}
		if in.capacity {
			// Only what fits under this process's descriptor limit:
			// a batch that does not fit arrives truncated, and fails
			// the handoff. Accepts are held before counting, so that
			// what they take is counted (AcceptWait).
			release = p.holdAccepts()
			most = cmp.Or(p.opts.MaxMigrated, migrate.DefaultMaxConns)
			room, ok := descriptorRoom()
			if ok && room < most {
				most = room
			}
			// Hold them on while the connections arrive only if the
			// room is short: the predecessor, whose connections are
			// among its descriptors and which, flooded, has no room
			// to accept more, has more open than there is room here (or it
			// cannot be told). A flood of connections has filled it
			// then, or its limit is higher.
			if theirs, known := openDescriptors(in.pid); !ok || known && theirs <= room {
				release()
			}
			if most < 1 {
				release()
				p.log.Warn("graceful: no room for connections under the descriptor limit; they stay with the predecessor and drain", slog.Int("room", most))
				ask, most = 0, 0
			} else {
				ask |= handoffmsg.FeatureCapacity
			}
		}
	}
	// From READY on, what this process writes to standard error is its
	// own (see Upgrade).
	p.restoreStderr()
	if err := handoffmsg.Send(c, handoffmsg.Message{Type: handoffmsg.MsgReady, Features: ask}); err != nil {
		return false, err
	}
	if most > 0 {
		if err := handoffmsg.Send(c, handoffmsg.Message{Type: handoffmsg.MsgCapacity, Items: uint32(min(uint64(most), math.MaxUint32))}); err != nil {
			return false, err
		}
	}
	var conns []*Conn
	if ask&handoffmsg.FeatureMigrate != 0 {
		opts := p.receiveOptions(in.stream)
		if most > 0 {
			// A predecessor that sends more than it was told fails.
			opts.MaxConns = most
		}
		conns, err = p.mig.Receive(c, opts)
		release()
		if err != nil {
			return false, err
		}
	}
	m, err := handoffmsg.Receive(c)
	if err == nil {
		err = m.Expect(handoffmsg.MsgDone)
	}
	if err != nil {
		for _, mc := range conns {
			mc.Conn.Close()
		}
		return false, err
	}
	p.mig.Adopt(conns)
	late = in.late && m.Features&handoffmsg.FeatureLateConns != 0
	if p.opts.Migrate && !in.migrate {
		p.mu.Lock()
		p.noMigration = fmt.Errorf("%w (predecessor pid %d)", ErrNoMigration, in.pid)
		p.mu.Unlock()
		p.log.Warn("graceful: the predecessor does not migrate connections (no Options.Migrate there)")
	}
	return late, nil
}

// receiveOptions are the successor's side of a migration.
func (p *Process) receiveOptions(stream bool) migrate.ReceiveOptions {
	return migrate.ReceiveOptions{
		Stream:   stream,
		Check:    p.checkMigrated,
		Logger:   p.log,
		MaxConns: p.opts.MaxMigrated,
		MaxBytes: p.opts.MaxMigratedBytes,
	}
}

// receiveLate takes, after DONE, the connections that the predecessor
// sends late (FeatureLateConns), until it hangs up or Close; it takes
// ownership of c.
func (p *Process) receiveLate(c *unixmsg.Conn, pid int) {
	done := make(chan struct{})
	p.mu.Lock()
	p.late = c
	p.lateDone = done
	p.mu.Unlock()
	go func() {
		defer close(done)
		defer c.Close()
		n, err := p.mig.ReceiveLate(c, p.receiveOptions(true))
		if err != nil {
			p.log.Warn("graceful: connections after the takeover stay with the predecessor", slog.Int("pid", pid), slog.Any("error", err))
		}
		if n > 0 {
			p.log.Debug("graceful: received connections after the takeover", slog.Int("count", n))
		}
	}()
}

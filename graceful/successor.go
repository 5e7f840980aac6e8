package graceful

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
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
		in, err = p.index(b)
	}
	if err != nil {
		b.Close()
		return nil, 0, err
	}
	both := m.Features & ours
	in.migrate = both&handoffmsg.FeatureMigrate != 0
	in.stream = in.migrate && both&handoffmsg.FeatureStreamConns != 0
	return in, m.Generation + 1, nil
}

func isDisconnect(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, unixmsg.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// confirm sends READY on in.pred and waits for DONE, taking the migrating
// connections in between if both sides asked for them.
func (p *Process) confirm(in *inheritance) error {
	c := in.pred
	c.SetDeadline(time.Now().Add(p.opts.Timeout))
	var ask uint32
	if in.migrate {
		ask = handoffmsg.FeatureMigrate
		if in.stream {
			ask |= handoffmsg.FeatureStreamConns
		}
	}
	// From READY on, what this process writes to standard error is its
	// own (see Upgrade).
	p.restoreStderr()
	if err := handoffmsg.Send(c, handoffmsg.Message{Type: handoffmsg.MsgReady, Features: ask}); err != nil {
		return err
	}
	var conns []*Conn
	if in.migrate {
		var err error
		conns, err = p.mig.Receive(c, migrate.ReceiveOptions{
			Stream:   in.stream,
			Check:    p.checkMigrated,
			Logger:   p.log,
			MaxConns: p.opts.MaxMigrated,
			MaxBytes: p.opts.MaxMigratedBytes,
		})
		if err != nil {
			return err
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
		return err
	}
	p.mig.Adopt(conns)
	if p.opts.Migrate && !in.migrate {
		p.mu.Lock()
		p.noMigration = fmt.Errorf("%w (predecessor pid %d)", ErrNoMigration, in.pid)
		p.mu.Unlock()
		p.log.Warn("graceful: the predecessor does not migrate connections (no Options.Migrate there)")
	}
	return nil
}

package graceful

import (
	"fmt"
	"log/slog"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful/systemd"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/kinds"
)

// systemd integration: a Process adopts the descriptors systemd passes
// (socket activation, and the descriptor store given back at start), tells
// systemd when it is ready, reloading, stopping, and which PID is now the
// service's main process. Outside systemd (no LISTEN_FDS, no
// NOTIFY_SOCKET) all of this does nothing.

// initSystemd takes the descriptors systemd passed, if any, and the
// notification socket. Called once, from New.
func (p *Process) initSystemd() error {
	set, err := systemd.Activation()
	if err != nil {
		return fmt.Errorf("graceful: systemd socket activation: %w", err)
	}
	n, err := systemd.NewNotifier()
	if err != nil {
		set.Close()
		return fmt.Errorf("graceful: systemd notification socket: %w", err)
	}
	p.sd, p.notify = set, n
	if ds := set.Descriptors(); len(ds) > 0 {
		p.log.Info("graceful: descriptors from systemd", slog.Int("count", len(ds)))
	}
	return nil
}

// fromSystemd takes a descriptor systemd passed that matches kind, network
// and address; ok is false when there is none.
func (p *Process) fromSystemd(want kinds.Kind, network, addr string) (int, bool) {
	p.mu.Lock()
	set := p.sd
	p.mu.Unlock()
	if set == nil {
		return -1, false
	}
	d, err := set.Match(want, network, addr)
	if err != nil {
		return -1, false
	}
	p.log.Debug("graceful: adopted from systemd", slog.String("name", d.Name), slog.String("addr", addr))
	return d.FD, true
}

// systemdReady closes what systemd passed and nobody took, and tells
// systemd the service is ready.
func (p *Process) systemdReady() {
	p.mu.Lock()
	set := p.sd
	p.sd = nil
	p.mu.Unlock()
	if set != nil {
		if n := len(set.Descriptors()); n > 0 {
			p.log.Info("graceful: closed unused descriptors from systemd", slog.Int("count", n))
		}
		set.Close()
	}
	p.sdNotify("READY=1", p.notify.Ready())
}

// sdNotify logs a failed notification; systemd's view of the service is
// advisory to the Process, never a reason to stop serving.
func (p *Process) sdNotify(what string, err error) {
	if err != nil {
		p.log.Warn("graceful: systemd notification failed", slog.String("state", what), slog.Any("error", err))
	}
}

// systemdHandoff marks the start of a handoff (RELOADING=1).
func (p *Process) systemdHandoff() { p.sdNotify("RELOADING=1", p.notify.Reloading()) }

// systemdTakeover tells systemd that pid, the successor, is the main
// process now. It is sent before DONE, so that the successor's own
// READY=1 comes from the process systemd already follows.
func (p *Process) systemdTakeover(pid int) { p.sdNotify("MAINPID", p.notify.MainPID(pid)) }

// systemdRollback says the service is ready again after a failed handoff.
func (p *Process) systemdRollback() { p.sdNotify("READY=1", p.notify.Ready()) }

// systemdStopping says the service is stopping (a Close without a
// successor) and closes what systemd passed and nobody took.
func (p *Process) systemdStopping(handedOff bool) {
	p.mu.Lock()
	set := p.sd
	p.sd = nil
	p.mu.Unlock()
	set.Close()
	if !handedOff {
		p.sdNotify("STOPPING=1", p.notify.Stopping())
	}
}

// Store puts duplicates of the Process's sockets and files in systemd's
// descriptor store under name (FDSTORE=1), for the next start to adopt.
// The unit needs FileDescriptorStoreMax=. Outside systemd it does nothing.
func (p *Process) Store(name string) error {
	if err := systemd.CheckName(name); err != nil {
		return err
	}
	p.mu.Lock()
	var fds []int
	var err error
	for _, r := range p.regs {
		if r.meta.Value(handoffmsg.MetaRole) == handoffmsg.RoleHandoff {
			continue
		}
		// Duplicates made inside Control: File().Fd() would switch the
		// shared open file to blocking mode under the running server.
		var d int
		if d, err = fd.Dup(r.v); err != nil {
			break
		}
		fds = append(fds, d)
	}
	p.mu.Unlock()
	defer fd.CloseAll(fds)
	if err != nil {
		return fmt.Errorf("graceful: store: %w", err)
	}
	if len(fds) == 0 {
		return nil
	}
	return p.notify.Store(name, fds...)
}

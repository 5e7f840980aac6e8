package graceful

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful/systemd"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/kinds"
)

// systemd integration: a Process adopts the descriptors systemd passes
// (socket activation, and the descriptor store given back at start), keeps
// the sockets it creates in the descriptor store, tells systemd when it is
// ready, reloading, stopping, and which PID is now the service's main
// process. Outside systemd (no LISTEN_FDS, no NOTIFY_SOCKET) all of this
// does nothing.

// storePrefix starts the name (FDNAME=) of every socket a Process keeps in
// the descriptor store. The rest of the name comes from the socket itself,
// so that every generation, and a process started after a crash, names the
// same socket alike: "fdpass/" network "/" local address "/" inode, with
// the bytes systemd refuses in a name (':', control characters) as '_'.
const storePrefix = "fdpass/"

// sdState is what a Process keeps of systemd between calls, guarded by
// Process.mu.
type sdState struct {
	// created holds the sockets this generation created, until Ready
	// stores them; after Ready (storing) a new one is stored at once.
	created []any
	storing bool
	// successor is the PID named in MAINPID= during the handoff in
	// progress: a rollback names this process again.
	successor int
}

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

// storing reports whether sockets go to the descriptor store: under
// systemd, unless Options.NoStore says no or systemd says the store is off
// (FDSTORE=0, which systemd 254 and later set from
// FileDescriptorStoreMax=).
func (p *Process) storing() bool {
	return p.notify != nil && !p.opts.NoStore && os.Getenv("FDSTORE") != "0"
}

// systemdCreated notes a socket this generation created in its own
// network namespace (ns), to be stored at Ready, or stores it now if
// Ready has run. A socket in another namespace is not stored: a process
// started by systemd could not match it.
func (p *Process) systemdCreated(v any, ns string) {
	if !p.storing() || ns != p.ns {
		return
	}
	p.mu.Lock()
	now := p.sys.storing
	if !now {
		p.sys.created = append(p.sys.created, v)
	}
	p.mu.Unlock()
	if now {
		p.store(v)
	}
}

// systemdUnused returns the store names of the inherited sockets nothing
// adopted, which Ready is about to close. Called before in.release.
func (p *Process) systemdUnused(in *inheritance) []string {
	if !p.storing() {
		return nil
	}
	var names []string
	for _, v := range in.vals {
		if name, err := storeName(v); err == nil {
			names = append(names, name)
		}
	}
	return names
}

// systemdReady stores the sockets this generation created, removes from
// the store the ones it inherited (gone) or systemd passed and nothing
// used, closes the latter, and tells systemd the service is ready.
func (p *Process) systemdReady(gone []string) {
	p.mu.Lock()
	set := p.sd
	p.sd = nil
	created := p.sys.created
	p.sys.created, p.sys.storing = nil, true
	p.mu.Unlock()
	for _, d := range set.Descriptors() {
		if strings.HasPrefix(d.Name, storePrefix) {
			gone = append(gone, d.Name)
		}
	}
	if set != nil {
		if n := len(set.Descriptors()); n > 0 {
			p.log.Info("graceful: closed unused descriptors from systemd", slog.Int("count", n))
		}
		set.Close()
	}
	if p.storing() {
		// Stored first: every name is its socket's own, so the order
		// does not matter, and a crash in between loses nothing.
		for _, v := range created {
			p.store(v)
		}
		for _, name := range gone {
			p.sdNotify("FDSTOREREMOVE=1", func() error { return p.notify.Remove(name) })
			p.log.Debug("graceful: removed from the descriptor store", slog.String("name", name))
		}
	}
	p.sdNotify("READY=1", p.notify.Ready)
}

// store puts a duplicate of the socket v in the descriptor store under its
// own name. FDPOLL=0: systemd would otherwise drop a socket on which
// polling reports an error, as a UDP socket's does after an ICMP error.
func (p *Process) store(v any) {
	name, err := storeName(v)
	if err != nil {
		p.sdNotify("FDSTORE=1", func() error { return err })
		return
	}
	// The duplicate, like the notification, may need the spare
	// descriptors: a flood of connections may hold all the others.
	var gone error
	err = p.sdNotify("FDSTORE=1", func() error {
		d, err := fd.Dup(v)
		if outOfDescriptors(err) {
			return err
		}
		if err != nil {
			gone = err
			return nil
		}
		defer fd.CloseAll([]int{d})
		return p.notify.Notify("FDSTORE=1\nFDPOLL=0\nFDNAME="+name, d)
	})
	if gone != nil {
		// Closed by its owner meanwhile: nothing to keep.
		p.log.Debug("graceful: socket closed before it was stored", slog.String("name", name), slog.Any("error", gone))
		return
	}
	if err == nil {
		p.log.Debug("graceful: stored in the descriptor store", slog.String("name", name))
	}
}

// storeName returns the name under which the socket v is kept in the
// descriptor store (see storePrefix).
func storeName(v any) (string, error) {
	var a net.Addr
	switch s := v.(type) {
	case net.Listener:
		a = s.Addr()
	case net.PacketConn:
		a = s.LocalAddr()
	default:
		return "", fmt.Errorf("graceful: store: %T is not a socket", v)
	}
	id, err := fd.IdentifyConn(v)
	if err != nil {
		return "", fmt.Errorf("graceful: store: %w", err)
	}
	ino := strconv.FormatUint(id.Ino, 10)
	addr := []byte(a.String())
	for i, c := range addr {
		if c < ' ' || c >= 0x7f || c == ':' {
			addr[i] = '_'
		}
	}
	head := storePrefix + a.Network() + "/"
	if room := systemd.MaxNameLen - len(head) - 1 - len(ino); len(addr) > room {
		addr = addr[:room]
	}
	return head + string(addr) + "/" + ino, nil
}

// sdNotify sends a notification, on the spare descriptors if it must
// (a flood of connections holds all the others: a READY=1 lost then
// leaves systemctl reload waiting), and logs a failure; systemd's view of
// the service is advisory to the Process, never a reason to stop serving:
// the error returned is for the caller's logs only.
func (p *Process) sdNotify(what string, send func() error) error {
	err := p.withSpares(send)
	if err != nil {
		p.log.Warn("graceful: systemd notification failed", slog.String("state", what), slog.Any("error", err))
	}
	return err
}

// systemdHandoff marks the start of a handoff (RELOADING=1).
func (p *Process) systemdHandoff() { p.sdNotify("RELOADING=1", p.notify.Reloading) }

// systemdTakeover tells systemd that pid, the successor, is the main
// process now. It is sent just before DONE, so that the successor's own
// READY=1, and what it stores, come from the process systemd already
// follows (with NotifyAccess=main systemd reads no other).
func (p *Process) systemdTakeover(pid int) {
	if p.notify == nil {
		return
	}
	p.mu.Lock()
	p.sys.successor = pid
	p.mu.Unlock()
	p.sdNotify("MAINPID", func() error { return p.notify.MainPID(pid) })
}

// systemdRollback says the service is ready again after a failed handoff.
// If the successor was named the main process already (sending DONE
// failed), this process names itself again: NotifyAccess=all takes that
// from it; with NotifyAccess=main only the successor is heard by now, and
// the successor names this process back when its own side fails
// (systemdAbandoned).
func (p *Process) systemdRollback() {
	p.mu.Lock()
	named := p.sys.successor
	p.sys.successor = 0
	p.mu.Unlock()
	if named != 0 {
		p.sdNotify("MAINPID", func() error { return p.notify.Notify("MAINPID=" + strconv.Itoa(os.Getpid()) + "\nREADY=1") })
		return
	}
	p.sdNotify("READY=1", p.notify.Ready)
}

// systemdTookOver forgets the successor named during the handoff that
// has just succeeded.
func (p *Process) systemdTookOver() {
	p.mu.Lock()
	p.sys.successor = 0
	p.mu.Unlock()
}

// systemdAbandoned runs in a successor whose handoff failed after it said
// READY: the predecessor may have named it the main process already, and
// serves on, so it names the predecessor (pid) back, ready. Were this
// process not the main process yet, systemd ignores the message (and says
// so in its journal) under NotifyAccess=main, and under NotifyAccess=all
// it confirms what systemd knows.
func (p *Process) systemdAbandoned(pid int) {
	if pid <= 0 {
		return
	}
	p.sdNotify("MAINPID", func() error { return p.notify.Notify("MAINPID=" + strconv.Itoa(pid) + "\nREADY=1") })
}

// systemdStopping says the service is stopping (a Close without a
// successor) and closes what systemd passed and nobody took. What is in
// the descriptor store stays there, for the next start. A successor that
// never served says nothing: the service is its predecessor's still, and
// under NotifyAccess=all systemd would take its STOPPING=1 for the
// service's.
func (p *Process) systemdStopping(handedOff bool) {
	p.mu.Lock()
	set := p.sd
	p.sd = nil
	failedSuccessor := p.inherited && !p.started
	p.mu.Unlock()
	set.Close()
	if !handedOff && !failedSuccessor {
		p.sdNotify("STOPPING=1", p.notify.Stopping)
	}
}

// Store puts duplicates of the Process's sockets and files in systemd's
// descriptor store under name (FDSTORE=1), for the next start to adopt.
// The unit needs FileDescriptorStoreMax=. Outside systemd it does nothing.
//
// The Process stores the sockets it creates by itself (see Options.NoStore),
// each under a name of its own that every generation knows; Store is for
// what that leaves out, files among them. What it stores under name stays
// in the store until removed with systemd.Notifier.Remove(name).
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

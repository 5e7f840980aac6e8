package graceful

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/kinds"
	"github.com/fdpass/fdpass/unixmsg"
	"github.com/vishvananda/netns"
)

// Listening and adoption: Listen, ListenPacket, OpenFile and File adopt
// what the predecessor handed over (adopt.go) or systemd passed
// (systemd.go), or create it; each registers what it returns, so that the
// Process hands a duplicate to its own successor (predecessor.go).

// registration is something the Process hands to its successor.
type registration struct {
	v    any
	meta unixmsg.Meta
}

// Listen returns a listener on network ("tcp", "tcp4", "tcp6", "unix" or
// "unixpacket") and addr: one the predecessor handed over with the same
// network, address (as given, not resolved) and network namespace, or one
// systemd passed with the same kind and address, or a new one (always,
// after Ready). The listener is the caller's; the Process hands a
// duplicate to the successor. Unix listeners do not remove their socket
// file on Close.
func (p *Process) Listen(network, addr string) (net.Listener, error) {
	return p.listen(p.ns, network, addr, func() (net.Listener, error) {
		return listenReplacing(network, addr)
	})
}

// ListenInNetNS is Listen in the network namespace h (entering it needs
// CAP_SYS_ADMIN). h stays the caller's.
func (p *Process) ListenInNetNS(h netns.NsHandle, network, addr string) (net.Listener, error) {
	id, err := fd.Identify(int(h))
	if err != nil {
		return nil, err
	}
	return p.listen(id.String(), network, addr, func() (ln net.Listener, err error) {
		err = kinds.InNetNS(h, func() error {
			ln, err = listenReplacing(network, addr)
			return err
		})
		return ln, err
	})
}

func (p *Process) listen(ns, network, addr string, create func() (net.Listener, error)) (net.Listener, error) {
	var want kinds.Kind
	switch network {
	case "tcp", "tcp4", "tcp6":
		want = kinds.TCPListener
	case "unix", "unixpacket":
		want = kinds.UnixListener
	default:
		return nil, fmt.Errorf("%w: Listen %q", ErrNetwork, network)
	}
	v, f, ok, err := p.take(matchKey{handoffmsg.RoleListener, network, addr, ns}, want)
	if err != nil {
		return nil, err
	}
	if !ok && ns == p.ns {
		f, ok = p.fromSystemd(want, network, addr)
	}
	var ln net.Listener
	created := false
	switch {
	case v != nil:
		ln = v.(net.Listener)
	case ok:
		if ln, err = kinds.ToListener(f); err != nil {
			return nil, err
		}
	default:
		if ln, err = create(); err != nil {
			return nil, err
		}
		ns = socketNetNS(ln, ns)
		created = true
	}
	if u, isUnix := ln.(*net.UnixListener); isUnix {
		u.SetUnlinkOnClose(false)
	}
	p.register(ln, handoffmsg.RoleListener, network, addr, ns)
	if created {
		p.systemdCreated(ln, ns)
	}
	p.log.Debug("graceful: listening", slog.String("network", network), slog.String("addr", addr), slog.Bool("inherited", ok))
	return ln, nil
}

// ListenPacket is Listen for network "udp", "udp4", "udp6" or
// "unixgram".
func (p *Process) ListenPacket(network, addr string) (net.PacketConn, error) {
	var want kinds.Kind
	switch network {
	case "udp", "udp4", "udp6":
		want = kinds.UDP
	case "unixgram":
		want = kinds.UnixDatagram
	default:
		return nil, fmt.Errorf("%w: ListenPacket %q", ErrNetwork, network)
	}
	ns := p.ns
	v, f, ok, err := p.take(matchKey{handoffmsg.RolePacket, network, addr, ns}, want)
	if err != nil {
		return nil, err
	}
	if !ok {
		f, ok = p.fromSystemd(want, network, addr)
	}
	var pc net.PacketConn
	switch {
	case v != nil:
		pc = v.(net.PacketConn)
	case ok:
		if pc, err = kinds.ToPacketConn(f); err != nil {
			return nil, err
		}
	default:
		if pc, err = net.ListenPacket(network, addr); err != nil {
			return nil, err
		}
		ns = socketNetNS(pc, ns)
		defer p.systemdCreated(pc, ns)
	}
	p.register(pc, handoffmsg.RolePacket, network, addr, ns)
	return pc, nil
}

// OpenFile is os.OpenFile, or the file the predecessor handed over with the
// same name, access mode and O_APPEND (sharing its offset). The file is the
// caller's; the Process hands a duplicate to the successor.
func (p *Process) OpenFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	mode := "flag=" + strconv.Itoa(flag&(os.O_RDONLY|os.O_WRONLY|os.O_RDWR|os.O_APPEND))
	_, f, ok, err := p.take(matchKey{handoffmsg.RoleFile, mode, name, ""}, kinds.File)
	if err != nil {
		return nil, err
	}
	var file *os.File
	if ok {
		file = kinds.ToFile(f, name)
	} else if file, err = os.OpenFile(name, flag, perm); err != nil {
		return nil, err
	}
	p.register(file, handoffmsg.RoleFile, mode, name, "")
	return file, nil
}

// take takes the first untaken inherited item under k, if it is of kind
// want: as the value converted ahead, or else as its descriptor.
func (p *Process) take(k matchKey, want kinds.Kind) (any, int, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, -1, false, net.ErrClosed
	}
	if p.in == nil {
		return nil, -1, false, nil
	}
	return p.in.take(k, want, p.log)
}

// File returns the descriptor the predecessor handed over under name, or
// else the file create returns: for what has no address (a memfd, an
// eventfd, a pipe). The file is the caller's; the Process hands a
// duplicate to the successor.
func (p *Process) File(name string, create func() (*os.File, error)) (*os.File, error) {
	if name == "" {
		return nil, fmt.Errorf("graceful: File: empty name")
	}
	f, ok, err := p.takeNamed(name)
	if err != nil {
		return nil, err
	}
	var file *os.File
	if ok {
		file = kinds.ToFile(f, name)
	} else if file, err = create(); err != nil {
		return nil, err
	}
	p.register(file, handoffmsg.RoleNamed, "", name, "")
	p.log.Debug("graceful: file", slog.String("name", name), slog.Bool("inherited", ok))
	return file, nil
}

// takeNamed takes the descriptor handed over under name, of any kind.
func (p *Process) takeNamed(name string) (int, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return -1, false, os.ErrClosed
	}
	if p.in == nil {
		return -1, false, nil
	}
	return p.in.takeNamed(name)
}

func (p *Process) register(v any, role, network, addr, ns string) {
	meta := unixmsg.Meta{
		{Key: handoffmsg.MetaRole, Value: role},
		{Key: handoffmsg.MetaNetwork, Value: network},
		{Key: handoffmsg.MetaAddr, Value: addr},
	}
	if ns != "" {
		meta = append(meta, unixmsg.KV{Key: handoffmsg.MetaNetNS, Value: ns})
	}
	if role == handoffmsg.RoleHandoff {
		// SO_PEERCRED names the process that created the listener, which
		// may be generations back: the successor learns who offers.
		meta = append(meta, unixmsg.KV{Key: handoffmsg.MetaPID, Value: strconv.Itoa(os.Getpid())})
	}
	p.mu.Lock()
	p.regs = append(p.regs, registration{v: v, meta: meta})
	p.mu.Unlock()
}

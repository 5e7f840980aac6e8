package unixmsg

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// Dial connects to the unix socket at addr ("unixpacket", "unix" or
// "unixgram" network; an address starting with @ is abstract) and returns a
// Conn on it. opts may be nil. A Listener takes "unixpacket". If the socket
// at addr is of another type than network asks for, the error says which
// (and matches the error of connect(2): EPROTOTYPE for a path,
// ECONNREFUSED for an abstract name).
func Dial(network, addr string, opts *Options) (*Conn, error) {
	raddr, err := net.ResolveUnixAddr(network, addr)
	if err != nil {
		return nil, err
	}
	uc, err := net.DialUnix(network, nil, raddr)
	if err != nil {
		return nil, typeMismatch(network, addr, err)
	}
	c, err := NewConn(uc, opts)
	if err != nil {
		uc.Close()
		return nil, err
	}
	return c, nil
}

// Listener accepts connections on a unix socket of type SOCK_SEQPACKET and
// returns each as a Conn. It is safe for concurrent use.
type Listener struct {
	ul   *net.UnixListener
	opts *Options
}

// Listen listens on addr, a socket path or an abstract name starting with
// @, with a SOCK_SEQPACKET socket: the usual way for two processes to
// start a session, one calling Listen and Accept, the other
// Dial("unixpacket", addr, opts). Every accepted Conn has opts (which may
// be nil). A socket file is created with the mode the process's umask
// leaves; one that exists already is an error (EADDRINUSE).
func Listen(addr string, opts *Options) (*Listener, error) {
	ul, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: addr, Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	l := &Listener{ul: ul}
	if opts != nil {
		o := *opts
		l.opts = &o
	}
	return l, nil
}

// Accept waits for the next peer and returns a Conn on its connection,
// which the caller closes. After Close it returns an error matching
// net.ErrClosed.
func (l *Listener) Accept() (*Conn, error) {
	uc, err := l.ul.AcceptUnix()
	if err != nil {
		return nil, err
	}
	c, err := NewConn(uc, l.opts)
	if err != nil {
		uc.Close()
		return nil, err
	}
	return c, nil
}

// Addr returns the address the listener listens on.
func (l *Listener) Addr() net.Addr { return l.ul.Addr() }

// Close stops listening and removes the socket file Listen created. The
// Conns it accepted are not affected.
func (l *Listener) Close() error { return l.ul.Close() }

// socketTypes names the types of unix sockets and their Go networks.
var socketTypes = []struct {
	typ           int
	name, network string
}{
	{syscall.SOCK_STREAM, "SOCK_STREAM", "unix"},
	{syscall.SOCK_SEQPACKET, "SOCK_SEQPACKET", "unixpacket"},
	{syscall.SOCK_DGRAM, "SOCK_DGRAM", "unixgram"},
}

// typeMismatch explains, when that is why connect(2) failed, that the
// socket at addr is of another type than network. A path to a socket of
// another type fails with EPROTOTYPE; an abstract name looks for sockets of
// the caller's type only, and fails with ECONNREFUSED.
func typeMismatch(network, addr string, err error) error {
	proto := errors.Is(err, syscall.EPROTOTYPE)
	if !proto && !errors.Is(err, syscall.ECONNREFUSED) {
		return err
	}
	ours := network
	for _, t := range socketTypes {
		if t.network == network {
			ours = fmt.Sprintf("%s (network %q)", t.name, t.network)
		}
	}
	if typ, ok := socketTypeAt(addr); ok {
		for _, t := range socketTypes {
			if t.typ == typ && t.network != network {
				return fmt.Errorf("unixmsg: %s is a %s socket (network %q) and this side dialled %s; both ends must use the same type: %w", addr, t.name, t.network, ours, err)
			}
		}
	}
	if !proto {
		return err
	}
	return fmt.Errorf("unixmsg: %s is not a %s socket; both ends must use the same type: %w", addr, ours, err)
}

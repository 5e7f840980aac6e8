package graceful

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/kinds"
)

// FdListener takes ownership of fd, a listening TCP or unix socket (as
// Receive hands it over), and returns a net.Listener on it. The listener
// may hold the socket under another descriptor number; either way fd is
// closed, and closing the listener closes the socket. On error fd is
// closed too; a descriptor of another kind gives an error matching
// ErrFdKind. meta is unused, and kept for the original API.
func FdListener(fd int, meta Meta) (net.Listener, error) {
	if err := fdCheckKind(fd, meta, "listener", kinds.TCPListener, kinds.UnixListener); err != nil {
		return nil, err
	}
	return kinds.ToListener(fd)
}

// FdConn takes ownership of fd, a connected TCP or unix stream socket, and
// returns a net.Conn on it, as FdListener does. On error fd is closed.
func FdConn(fd int, meta Meta) (net.Conn, error) {
	if err := fdCheckKind(fd, meta, "conn", kinds.TCPConn, kinds.UnixConn); err != nil {
		return nil, err
	}
	return kinds.ToConn(fd)
}

// FdPacketConn takes ownership of fd, a UDP or unix datagram socket, and
// returns a net.PacketConn on it, as FdListener does. On error fd is
// closed.
func FdPacketConn(fd int, meta Meta) (net.PacketConn, error) {
	if err := fdCheckKind(fd, meta, "packet conn", kinds.UDP, kinds.UnixDatagram); err != nil {
		return nil, err
	}
	return kinds.ToPacketConn(fd)
}

// fdCheckKind closes f and returns an error unless it is of one of the
// kinds want. Where the platform cannot tell, the net package's own
// checks decide.
func fdCheckKind(f int, meta Meta, what string, want ...kinds.Kind) error {
	info, err := kinds.Detect(f)
	if errors.Is(err, kinds.ErrUnsupported) {
		return nil
	}
	if err == nil && slices.Contains(want, info.Kind) {
		return nil
	}
	fd.Close(f)
	if err != nil {
		return fmt.Errorf("graceful: descriptor %d (%q): %w", f, meta.Name, err)
	}
	return fmt.Errorf("graceful: descriptor %d (%q) is a %s, not a %s: %w", f, meta.Name, info.Kind, what, ErrFdKind)
}

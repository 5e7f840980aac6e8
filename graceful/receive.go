package graceful

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/kinds"
)

// FdListener takes ownership of fd, a listening TCP or unix socket, and
// returns a net.Listener on it; on error fd is closed (another kind:
// ErrFdKind). meta is unused.
func FdListener(fd int, meta Meta) (net.Listener, error) {
	if err := fdCheckKind(fd, meta, "listener", kinds.TCPListener, kinds.UnixListener); err != nil {
		return nil, err
	}
	return kinds.ToListener(fd)
}

// FdConn is FdListener for a connected TCP or unix stream socket.
func FdConn(fd int, meta Meta) (net.Conn, error) {
	if err := fdCheckKind(fd, meta, "conn", kinds.TCPConn, kinds.UnixConn); err != nil {
		return nil, err
	}
	return kinds.ToConn(fd)
}

// FdPacketConn is FdListener for a UDP or unix datagram socket.
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

//go:build !linux

package migrate

import (
	"net"

	"github.com/fdpass/fdpass/kinds"
)

// connSlot is the memory of one adopted connection.
type connSlot struct{ c Conn }

// adopt makes fd, a connected stream socket, the connection in s, which
// takes ownership of it.
func (s *connSlot) adopt(fd int, _ kinds.Kind) (net.Conn, error) { return kinds.ToConn(fd) }

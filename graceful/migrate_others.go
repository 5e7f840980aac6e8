//go:build !linux

package graceful

import (
	"net"

	"github.com/fdpass/fdpass/kinds"
)

func streamConn(fd int, _ kinds.Kind) (net.Conn, error) { return kinds.ToConn(fd) }

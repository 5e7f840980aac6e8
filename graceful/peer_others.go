//go:build !linux

package graceful

import "net"

func peerCredentials(*net.UnixConn) (Peer, error) { return Peer{}, ErrUnsupported }

//go:build !linux

package graceful

import "net"

// handlerPeerCred is Linux-only (SO_PEERCRED); elsewhere clients are named by
// address.
func handlerPeerCred(*net.UnixConn) string { return "" }

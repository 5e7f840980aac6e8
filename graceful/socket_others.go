//go:build !linux

package graceful

import (
	"net"
	"os"
)

const supported = false

func dialHandoff(string) (*net.UnixConn, error) { return nil, ErrUnsupported }

type pathState int

const (
	pathAbsent pathState = iota
	pathStale
	pathOther
)

func classifyDial(string, error) (pathState, error) { return pathOther, ErrUnsupported }

func listenHandoff(string, os.FileMode, bool) (*net.UnixListener, error) {
	return nil, ErrUnsupported
}

func removeSocketFile(string) {}

func listenReplacing(network, addr string) (net.Listener, error) { return net.Listen(network, addr) }

func setCloexec(int) bool { return false }

func dupOnto(int, int) {}

func closeFD(int) {}

//go:build linux

package graceful

import (
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// handlerPeerCred returns "pid N uid N" for the process at the other end of uc,
// from SO_PEERCRED, or "" if it cannot be read.
func handlerPeerCred(uc *net.UnixConn) string {
	rc, err := uc.SyscallConn()
	if err != nil {
		return ""
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return ""
	}
	return "pid " + strconv.Itoa(int(cred.Pid)) + " uid " + strconv.Itoa(int(cred.Uid))
}

//go:build linux

package graceful

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// peerCredentials wraps getsockopt(SO_PEERCRED).
func peerCredentials(uc *net.UnixConn) (Peer, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(s uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(s), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, err
	}
	if cerr != nil {
		return Peer{}, os.NewSyscallError("getsockopt SO_PEERCRED", cerr)
	}
	return Peer{PID: int(cred.Pid), UID: cred.Uid, GID: cred.Gid}, nil
}

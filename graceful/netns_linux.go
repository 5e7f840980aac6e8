//go:build linux

package graceful

import (
	"syscall"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/kinds"
	"golang.org/x/sys/unix"
)

// currentNetNS names the calling thread's network namespace by the
// identity of its nsfs inode, with one stat(2).
func currentNetNS() string {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err == nil {
		return fd.ID{Dev: uint64(st.Dev), Ino: st.Ino}.String()
	}
	if id, err := kinds.CurrentNetNS(); err == nil {
		return id.String()
	}
	return ""
}

// socketNetNS names the network namespace the socket behind v was created
// in, where the kernel tells (SIOCGSKNS needs CAP_NET_ADMIN), else returns
// def.
func socketNetNS(v any, def string) string {
	sc, ok := v.(syscall.Conn)
	if !ok {
		return def
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return def
	}
	var id fd.ID
	var ierr error
	if err := rc.Control(func(s uintptr) { id, ierr = kinds.SocketNetNS(int(s)) }); err != nil || ierr != nil {
		return def
	}
	return id.String()
}

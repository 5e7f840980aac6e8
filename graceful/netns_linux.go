//go:build linux

package graceful

import (
	"runtime"
	"sync"
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
	var id fd.ID
	var ierr error
	if err := control(v, func(s int) { id, ierr = kinds.SocketNetNS(s) }); err != nil || ierr != nil {
		return def
	}
	return id.String()
}

// ownNetNS is the calling thread's network namespace, named twice: by
// identity (currentNetNS) and by the number the kernel gives it
// (SO_NETNS_COOKIE, Linux 5.14 and later; 0 where it has none), which
// every socket created in it answers with one getsockopt(2), no
// privilege needed. SIOCGSKNS, by contrast, opens the namespace as a file
// for each socket (an ioctl, an fstat and a close) and needs
// CAP_NET_ADMIN.
type ownNetNS struct {
	id     string
	cookie uint64
}

func currentOwnNetNS() ownNetNS {
	// One thread for both names.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ns := ownNetNS{id: currentNetNS()}
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return ns
	}
	defer unix.Close(s)
	if c, err := unix.GetsockoptUint64(s, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE); err == nil {
		ns.cookie = c
	}
	return ns
}

// homes tells, for each of the sockets fds, whether it was created in ns,
// where the kernel says (nsUnknown elsewhere). Many sockets are read on
// every processor at once. fds are not affected.
func (ns ownNetNS) homes(fds []int) []nsAnswer {
	out := make([]nsAnswer, len(fds))
	if ns.cookie == 0 {
		return out
	}
	read := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			c, err := unix.GetsockoptUint64(fds[i], unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
			switch {
			case err != nil:
			case c == ns.cookie:
				out[i] = nsHere
			default:
				out[i] = nsElsewhere
			}
		}
	}
	workers := max(min(runtime.GOMAXPROCS(0), len(fds)/minPerWorker), 1)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*len(fds)/workers, (w+1)*len(fds)/workers
		if w == workers-1 {
			read(lo, hi)
			break
		}
		wg.Go(func() { read(lo, hi) })
	}
	wg.Wait()
	return out
}

// minPerWorker is the number of sockets below which a second goroutine
// reading cookies does not pay for itself.
const minPerWorker = 128

// control runs f on the descriptor behind v.
func control(v any, f func(int)) error {
	sc, ok := v.(syscall.Conn)
	if !ok {
		return syscall.EINVAL
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(s uintptr) { f(int(s)) })
}

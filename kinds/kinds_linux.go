//go:build linux

package kinds

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

const (
	afInet        = unix.AF_INET
	afInet6       = unix.AF_INET6
	sIFSOCK       = unix.S_IFSOCK
	sockStream    = unix.SOCK_STREAM
	sockDgram     = unix.SOCK_DGRAM
	ipprotoTCP    = unix.IPPROTO_TCP
	ipprotoUDP    = unix.IPPROTO_UDP
	sockSeqpacket = unix.SOCK_SEQPACKET

	// nsGetNsType is NS_GET_NSTYPE, _IO(0xb7, 0x3) in linux/nsfs.h.
	nsGetNsType = 0xb703
)

func detect(fd int) (Info, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Info{}, os.NewSyscallError("fstat", err)
	}
	info := Info{Mode: st.Mode & unix.S_IFMT}
	switch info.Mode {
	case unix.S_IFSOCK:
		si, err := detectSocket(fd, info)
		if errors.Is(err, unix.EBADF) {
			// An O_PATH descriptor of a socket inode: it names the
			// socket file but is no socket to talk through.
			info.Kind = Other
			return info, nil
		}
		return si, err
	case unix.S_IFREG:
		if st.Size != 0 {
			// nsfs and pidfs files are always empty.
			info.Kind = File
			break
		}
		k, err := regularKind(fd)
		if err != nil {
			return Info{}, err
		}
		info.Kind = k
	case unix.S_IFDIR, unix.S_IFIFO, unix.S_IFCHR:
		info.Kind = File
	default:
		// Block devices and anonymous inodes (eventfd, epoll, signalfd, ...).
		info.Kind = Other
	}
	return info, nil
}

// regularKind tells real files from the pseudo-files that also report
// S_IFREG: namespace handles (nsfs) and pidfds (pidfs).
func regularKind(fd int) (Kind, error) {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return Invalid, os.NewSyscallError("fstatfs", err)
	}
	switch uint32(sfs.Type) {
	case unix.NSFS_MAGIC:
		t, err := unix.IoctlRetInt(fd, nsGetNsType)
		if err == nil && t == unix.CLONE_NEWNET {
			return NetNS, nil
		}
		return Other, nil
	case unix.PID_FS_MAGIC, unix.ANON_INODE_FS_MAGIC:
		return Other, nil
	}
	return File, nil
}

func detectSocket(fd int, info Info) (Info, error) {
	var err error
	if info.Family, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
		return Info{}, os.NewSyscallError("getsockopt", err)
	}
	if info.Type, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
		return Info{}, os.NewSyscallError("getsockopt", err)
	}
	info.Mode = unix.S_IFSOCK
	if info.Family == unix.AF_INET || info.Family == unix.AF_INET6 || info.Family == unix.AF_SMC {
		if info.Protocol, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil {
			return Info{}, os.NewSyscallError("getsockopt", err)
		}
	}
	listening := false
	if info.Type == unix.SOCK_STREAM || info.Type == unix.SOCK_SEQPACKET {
		if listening, err = acceptConn(fd); err != nil {
			return Info{}, err
		}
	}
	info.Kind = classifySocket(info.Family, info.Type, info.Protocol, listening)
	return info, nil
}

// classifySocket names the kind of a socket from its SO_DOMAIN, SO_TYPE,
// SO_PROTOCOL and SO_ACCEPTCONN.
func classifySocket(family, typ, proto int, listening bool) Kind {
	switch family {
	case unix.AF_INET, unix.AF_INET6:
		switch {
		case typ == unix.SOCK_STREAM && (proto == unix.IPPROTO_TCP || proto == unix.IPPROTO_MPTCP || proto == unix.IPPROTO_SMC):
			// Go listens with MPTCP by default where the kernel has it
			// (Go 1.24); MPTCP and SMC sockets are TCP sockets to their
			// users (SMC falls back to TCP and answers TCP's options).
			if listening {
				return TCPListener
			}
			return TCPConn
		case typ == unix.SOCK_DGRAM && (proto == unix.IPPROTO_UDP || proto == unix.IPPROTO_UDPLITE):
			return UDP
		}
	case unix.AF_SMC:
		if typ == unix.SOCK_STREAM {
			if listening {
				return TCPListener
			}
			return TCPConn
		}
	case unix.AF_UNIX:
		switch typ {
		case unix.SOCK_STREAM, unix.SOCK_SEQPACKET:
			if listening {
				return UnixListener
			}
			return UnixConn
		case unix.SOCK_DGRAM:
			return UnixDatagram
		}
	}
	return Other
}

func acceptConn(fd int) (bool, error) {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return false, os.NewSyscallError("getsockopt", err)
	}
	return v != 0, nil
}

func verify(fd int, want Kind) error {
	// Fast paths: system calls cost a microsecond or more on virtual
	// machines, about what the kernel spends passing a descriptor, so TCP
	// and UDP kinds are checked with one call each. Anything that does not
	// pass gets the full look below, which names what it really is.
	switch want {
	case TCPListener, TCPConn:
		// TCP_INFO at level SOL_TCP answers only for TCP sockets (MPTCP
		// included) and its first byte is the state; a byte is all the
		// kernel copies when asked for one.
		if state, err := unix.GetsockoptByte(fd, unix.SOL_TCP, unix.TCP_INFO); err == nil {
			got := TCPConn
			if state == tcpListen {
				got = TCPListener
			}
			if got == want {
				return nil
			}
		}
	case UDP:
		// SOL_UDP options answer only for UDP (and UDP-Lite) sockets.
		if _, err := unix.GetsockoptInt(fd, unix.SOL_UDP, unix.UDP_CORK); err == nil {
			return nil
		}
	}
	var info Info
	var err error
	if want.IsSocket() {
		// Skip fstat: a descriptor that is not a socket fails the first
		// getsockopt, and only then is it worth a full look.
		info, err = detectSocket(fd, Info{})
		if err != nil {
			// Not a socket (ENOTSOCK), or not one to talk through (EBADF
			// for O_PATH): only a full look says what it is.
			info, err = detect(fd)
		}
	} else {
		info, err = detect(fd)
	}
	if err != nil {
		return err
	}
	if info.Kind != want {
		return &MismatchError{Want: want, Got: info.Kind}
	}
	return nil
}

// tcpListen is TCP_LISTEN from include/net/tcp_states.h.
const tcpListen = 10

package fd

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrNotSyscallConn is returned by Dup, DupFile and IdentifyConn for a
// value that has no descriptor (it does not implement syscall.Conn), so that
// a caller handed arbitrary values can tell that apart from a failed system
// call.
var ErrNotSyscallConn = errors.New("fd: value does not implement syscall.Conn")

// Dup duplicates the descriptor behind v, which must implement syscall.Conn
// (every *net.TCPListener, *net.TCPConn, *net.UDPConn, *net.UnixListener,
// *net.UnixConn, *net.IPConn and *os.File does). The duplicate is
// close-on-exec and belongs to the caller; closing it does not affect v, and
// closing v does not affect it. v keeps its blocking mode.
func Dup(v any) (int, error) {
	sc, ok := v.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("%w: %T", ErrNotSyscallConn, v)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	err = rc.Control(func(fd uintptr) {
		nfd, derr = DupFD(int(fd))
	})
	if err != nil {
		return -1, err
	}
	return nfd, derr
}

// DupFD duplicates the raw descriptor fd with F_DUPFD_CLOEXEC. The duplicate
// belongs to the caller; fd is not affected.
func DupFD(fd int) (int, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("fcntl", err)
	}
	return nfd, nil
}

// DupFile returns an *os.File holding a duplicate of the descriptor behind v,
// named name. Closing the file does not affect v, and closing v does not
// affect the file.
func DupFile(v any, name string) (*os.File, error) {
	nfd, err := Dup(v)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(nfd), name), nil
}

// Close closes the raw descriptor fd, which the caller owns.
func Close(fd int) error {
	if err := unix.Close(fd); err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}

// CloseAll closes every descriptor in fds, which the caller owns, and
// returns the first error. Negative entries are skipped. Where the platform
// has close_range(2), each run of consecutive numbers (as received
// descriptors usually are) is closed with one call.
func CloseAll(fds []int) error {
	var first error
	for i := 0; i < len(fds); {
		f := fds[i]
		if f < 0 {
			i++
			continue
		}
		j := i + 1
		for j < len(fds) && fds[j] == fds[j-1]+1 {
			j++
		}
		var err error
		if j-i > 1 {
			err = closeRange(f, fds[j-1])
		} else {
			err = Close(f)
		}
		if err != nil && first == nil {
			first = err
		}
		i = j
	}
	return first
}

// closeEach closes first through last one by one.
func closeEach(first, last int) error {
	var ferr error
	for f := first; f <= last; f++ {
		if err := Close(f); err != nil && ferr == nil {
			ferr = err
		}
	}
	return ferr
}

// ID identifies an open file by device and inode. Two descriptors with the
// same ID refer to the same file (or socket); duplicates of one descriptor
// always share it.
type ID struct {
	Dev uint64
	Ino uint64
}

func (id ID) String() string { return fmt.Sprintf("%d:%d", id.Dev, id.Ino) }

// Identify returns the ID of the raw descriptor fd. fd is not affected.
func Identify(fd int) (ID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return ID{}, os.NewSyscallError("fstat", err)
	}
	return ID{Dev: uint64(st.Dev), Ino: uint64(st.Ino)}, nil
}

// IdentifyConn returns the ID of the descriptor behind v, which must
// implement syscall.Conn. v is not affected. It is Identify for a Go value
// without the duplicate that Dup would make: the way to check that a
// listener or conn received or inherited is the very socket that was sent.
func IdentifyConn(v any) (ID, error) {
	sc, ok := v.(syscall.Conn)
	if !ok {
		return ID{}, fmt.Errorf("%w: %T", ErrNotSyscallConn, v)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return ID{}, err
	}
	var id ID
	var ierr error
	if err := rc.Control(func(fd uintptr) { id, ierr = Identify(int(fd)) }); err != nil {
		return ID{}, err
	}
	return id, ierr
}

// Same reports whether the raw descriptors a and b refer to the same open
// file (same device and inode). Neither is affected. A passed descriptor
// arrives under a new number; Same is how a receiver (or a test) tells that
// it is the file the sender had.
func Same(a, b int) (bool, error) {
	ia, err := Identify(a)
	if err != nil {
		return false, err
	}
	ib, err := Identify(b)
	if err != nil {
		return false, err
	}
	return ia == ib, nil
}

// Count returns the number of descriptors the process has open, not counting
// the one Count itself uses to read the list.
func Count() (int, error) {
	d, err := os.Open(fdDir)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return 0, err
	}
	return len(names) - 1, nil
}

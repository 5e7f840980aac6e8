//go:build linux

package graceful

import (
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
)

const supported = true

func isAbstract(path string) bool { return len(path) > 0 && path[0] == '@' }

func dialHandoff(path string) (*net.UnixConn, error) {
	return net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
}

type pathState int

const (
	pathAbsent pathState = iota // nothing listens and no file is in the way
	pathStale                   // a socket file nobody listens on
	pathOther                   // anything else: the error says what
)

// classifyDial tells, from the error of dialing path, whether a handoff
// socket may be created there.
func classifyDial(path string, err error) (pathState, error) {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return pathAbsent, nil
	case errors.Is(err, syscall.ECONNREFUSED):
		if isAbstract(path) {
			// Abstract names vanish with their socket: nobody has it.
			return pathAbsent, nil
		}
		// connect(2) also says ECONNREFUSED for a file that is not a
		// socket; never remove one of those.
		st, serr := os.Lstat(path)
		switch {
		case errors.Is(serr, os.ErrNotExist):
			return pathAbsent, nil
		case serr != nil:
			return pathOther, serr
		case st.Mode()&os.ModeSocket == 0:
			return pathOther, fmt.Errorf("%w: %s (%s)", ErrNotSocket, path, fileType(st.Mode()))
		}
		return pathStale, nil
	case errors.Is(err, syscall.EPROTOTYPE):
		// A live socket of another type (SOCK_STREAM, say).
		return pathOther, fmt.Errorf("%w: %s is a SOCK_STREAM or SOCK_DGRAM socket, and the handoff socket is SOCK_SEQPACKET: %w", ErrAlreadyRunning, path, err)
	case errors.Is(err, syscall.EACCES):
		return pathOther, fmt.Errorf("graceful: cannot reach the handoff socket %s (run as its owner, or widen Options.Mode): %w", path, err)
	}
	return pathOther, fmt.Errorf("graceful: handoff socket %s: %w", path, err)
}

// listenHandoff creates the handoff listener at path with the given mode.
// A file system socket is bound at path itself with a umask that leaves it
// 0600 or narrower, on a thread of its own whose umask nothing else sees,
// then given its mode: it is never reachable with a wider mode, its name
// is path (in every address an error reports), and bind(2) never replaces
// a socket that appeared meanwhile (errRetry). With replace, the stale
// file at path is removed first.
func listenHandoff(path string, mode os.FileMode, replace bool) (*net.UnixListener, error) {
	if isAbstract(path) {
		ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%w: %w", errRetry, err)
		}
		return ln, err
	}
	if replace {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, createError(path, "remove", err)
		}
	}
	ln, err := listenPrivately(path, mode)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("%w: %w", errRetry, err)
	}
	if err != nil {
		return nil, createError(path, "listen", err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(path, mode.Perm()); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, createError(path, "chmod", err)
	}
	return ln, nil
}

// listenPrivately binds a SOCK_SEQPACKET listener at path with a umask
// that grants no more than mode and 0600 do. The umask belongs to the
// process's file-system context, shared by its threads: the bind runs on
// a locked thread that first takes a context of its own (unshare
// CLONE_FS), and that thread is retired afterwards, never handed back to
// other goroutines.
func listenPrivately(path string, mode os.FileMode) (*net.UnixListener, error) {
	type result struct {
		ln  *net.UnixListener
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// Not unlocked: the goroutine's end retires the thread.
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			done <- result{err: os.NewSyscallError("unshare CLONE_FS", err)}
			return
		}
		unix.Umask(int(^(mode.Perm() & 0o600) & 0o777))
		ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
		done <- result{ln, err}
	}()
	r := <-done
	return r.ln, r.err
}

// createError reports a failure to create the handoff socket at path,
// naming the path and, where access is the trouble, what to do.
func createError(path, step string, err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		err = os.NewSyscallError(step, errno)
	}
	hint := ""
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EROFS) {
		hint = fmt.Sprintf(" (%s must be writable by this user)", filepath.Dir(path))
	}
	return fmt.Errorf("graceful: create handoff socket %s%s: %w", path, hint, err)
}

func removeSocketFile(path string) {
	if !isAbstract(path) {
		os.Remove(path)
	}
}

// listenReplacing is net.Listen, which for a unix socket replaces a stale
// socket file at addr (one nobody listens on).
func listenReplacing(network, addr string) (net.Listener, error) {
	ln, err := net.Listen(network, addr)
	if err == nil || (network != "unix" && network != "unixpacket") || isAbstract(addr) || !errors.Is(err, syscall.EADDRINUSE) {
		return ln, err
	}
	c, derr := net.Dial(network, addr)
	if derr == nil {
		c.Close()
		return nil, err
	}
	if !errors.Is(derr, syscall.ECONNREFUSED) {
		return nil, err
	}
	if st, serr := os.Lstat(addr); serr != nil || st.Mode()&os.ModeSocket == 0 {
		return nil, err
	}
	if rerr := os.Remove(addr); rerr != nil {
		return nil, err
	}
	return net.Listen(network, addr)
}

func setCloexec(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
	return err == nil
}

func dupOnto(from, to int) { unix.Dup3(from, to, 0) }

func closeFD(fd int) { unix.Close(fd) }

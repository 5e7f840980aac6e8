package graceful

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// SocketPath returns a handoff socket path for the service name, in a
// directory only this user can reach, which it creates (mode 0700) if
// needed:
//
//   - $XDG_RUNTIME_DIR/name/handoff.sock, when XDG_RUNTIME_DIR is set (a
//     user's session, systemd's RuntimeDirectory);
//   - /run/name/handoff.sock for root;
//   - otherwise os.TempDir()/name-UID/handoff.sock.
//
// A shared directory such as /tmp lets any local user create the path
// first and keep the service from starting: SocketPath refuses a
// directory that another user owns, or that others may write to, and says
// which path is taken and what to do. name must be a plain file name.
func SocketPath(name string) (string, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return "", fmt.Errorf("graceful: SocketPath: %q is not a plain name", name)
	}
	uid := os.Getuid()
	var dir string
	switch xdg := os.Getenv("XDG_RUNTIME_DIR"); {
	case xdg != "":
		dir = filepath.Join(xdg, name)
	case uid == 0:
		dir = filepath.Join("/run", name)
	default:
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("%s-%d", name, uid))
	}
	if err := privateDir(dir, uid); err != nil {
		return "", err
	}
	return filepath.Join(dir, "handoff.sock"), nil
}

// privateDir makes sure dir is a directory that uid owns and nobody else
// may write to, creating it (0700) if it does not exist.
func privateDir(dir string, uid int) error {
	err := os.Mkdir(dir, 0o700)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("graceful: handoff socket directory %s: %w (set XDG_RUNTIME_DIR, or give the path yourself)", dir, err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("graceful: handoff socket directory %s: %w", dir, err)
	}
	switch owner, ok := fileOwner(st); {
	case !st.IsDir():
		return fmt.Errorf("graceful: handoff socket directory %s is %s, not a directory: remove it, or give another path", dir, fileType(st.Mode()))
	case ok && owner != uid:
		return fmt.Errorf("graceful: handoff socket directory %s belongs to uid %d, not to this user (%d): someone else took the path; remove it, or give another path", dir, owner, uid)
	case st.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("graceful: handoff socket directory %s is writable by others (%v): make it 0700, or give another path", dir, st.Mode().Perm())
	}
	return nil
}

// fileOwner returns the uid that owns the file st describes.
func fileOwner(st fs.FileInfo) (int, bool) {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return int(s.Uid), true
	}
	return 0, false
}

// fileType names what a non-socket file is, for error messages.
func fileType(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m.IsRegular():
		return "a regular file"
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return m.String()
}

//go:build linux

package graceful_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fdpass/fdpass/graceful"
)

var _ = registerRestartRole("socketpath", roleSocketPath)

// roleSocketPath prints what SocketPath says for the name GT_NAME.
func roleSocketPath() error {
	p, err := graceful.SocketPath(os.Getenv("GT_NAME"))
	if err != nil {
		say("error %s", strings.ReplaceAll(err.Error(), " ", "_"))
		return nil
	}
	st, err := os.Stat(filepath.Dir(p))
	if err != nil {
		return err
	}
	say("path %s mode=%v", p, st.Mode().Perm())
	return nil
}

func TestSocketPath(t *testing.T) {
	for _, bad := range []string{"", ".", "..", "a/b"} {
		if _, err := graceful.SocketPath(bad); err == nil {
			t.Errorf("SocketPath(%q) succeeded", bad)
		}
	}
	xdg := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	p, err := graceful.SocketPath("myapp")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(xdg, "myapp", "handoff.sock"); p != want {
		t.Errorf("with XDG_RUNTIME_DIR: %s, want %s", p, want)
	}
	if st, err := os.Stat(filepath.Dir(p)); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("directory: %v, %v; want mode 0700", st.Mode(), err)
	}
	// A directory others may write to is refused.
	if err := os.Chmod(filepath.Dir(p), 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := graceful.SocketPath("myapp"); err == nil || !strings.Contains(err.Error(), "writable by others") {
		t.Errorf("a world-writable directory: %v", err)
	}
}

// TestSocketPathUsers: root gets /run; a user without XDG_RUNTIME_DIR a
// private directory in /tmp, and a clear error when another user took it.
func TestSocketPathUsers(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a child as another user")
	}
	name := fmt.Sprintf("fdpass-sockpath-%d", os.Getpid())
	run := func(cred *syscall.Credential) string {
		t.Helper()
		env := []string{"GT_NAME=" + name, "XDG_RUNTIME_DIR="}
		var attr *syscall.SysProcAttr
		bin := ""
		if cred != nil {
			attr = &syscall.SysProcAttr{Credential: cred}
			dir, err := os.MkdirTemp("", "graceful-test")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			os.Chmod(dir, 0o755)
			bin = filepath.Join(dir, "graceful.test")
			if err := copyFile(os.Args[0], bin); err != nil {
				t.Fatal(err)
			}
		}
		c := startRestartChild(t, bin, "socketpath", attr, env...)
		l := c.expect(" ")
		c.mustExit()
		return l
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Join("/run", name)) })
	if l, want := run(nil), "path /run/"+name+"/handoff.sock mode=-rwx------"; l != want {
		t.Errorf("root: %q, want %q", l, want)
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	private := filepath.Join(os.TempDir(), fmt.Sprintf("%s-65534", name))
	t.Cleanup(func() { os.RemoveAll(private) })
	if l, want := run(nobody), "path "+private+"/handoff.sock mode=-rwx------"; l != want {
		t.Errorf("nobody: %q, want %q", l, want)
	}
	// Squatted: the directory exists and belongs to someone else.
	os.RemoveAll(private)
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	l := run(nobody)
	if !strings.HasPrefix(l, "error ") || !strings.Contains(l, private) || !strings.Contains(l, "belongs_to_uid_0") {
		t.Errorf("nobody, squatted: %q, want an error naming %s and its owner", l, private)
	}
}

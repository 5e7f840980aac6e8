//go:build linux

package graceful_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
)

// TestRestartSocketFile: the socket file's mode, a stale file replaced, a
// live one or a file that is not a socket left alone.
func TestRestartSocketFile(t *testing.T) {
	restartCheckLeaks(t)
	t.Run("mode", func(t *testing.T) {
		for _, tc := range []struct {
			mode, want os.FileMode
		}{{0, 0o600}, {0o660, 0o660}} {
			path := filepath.Join(t.TempDir(), "h.sock")
			p, err := graceful.New(graceful.Options{Path: path, Mode: tc.mode})
			if err != nil {
				t.Fatal(err)
			}
			st, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != tc.want {
				t.Errorf("Mode %o: socket file mode %v, want socket %o", tc.mode, st.Mode(), tc.want)
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			if len(entries) != 1 {
				t.Errorf("directory holds %d entries, want the socket only", len(entries))
			}
			p.Close()
		}
	})
	t.Run("stale", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "h.sock")
		l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		l.Close()
		p, err := graceful.New(graceful.Options{Path: path})
		if err != nil {
			t.Fatalf("stale socket file: %v", err)
		}
		defer p.Close()
		if p.Inherited() || p.Generation() != 1 {
			t.Errorf("inherited %v, generation %d", p.Inherited(), p.Generation())
		}
		c, err := net.Dial("unixpacket", path)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
	t.Run("not a socket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "h.sock")
		os.WriteFile(path, []byte("precious"), 0o600)
		_, err := graceful.New(graceful.Options{Path: path})
		if !errors.Is(err, graceful.ErrNotSocket) {
			t.Errorf("New over a regular file: %v, want ErrNotSocket", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "precious" {
			t.Error("regular file changed")
		}
	})
	for _, network := range []string{"unixpacket", "unix"} {
		t.Run("live "+network, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "h.sock")
			l, err := net.Listen(network, path)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			var wg sync.WaitGroup
			defer wg.Wait()
			defer l.Close()
			wg.Go(func() {
				// Someone else's server: it hangs up on everyone.
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			})
			_, err = graceful.New(graceful.Options{Path: path, Timeout: 5 * time.Second})
			if !errors.Is(err, graceful.ErrAlreadyRunning) {
				t.Errorf("New over a live %s socket: %v, want ErrAlreadyRunning", network, err)
			}
			if network == "unix" && (err == nil || !strings.Contains(err.Error(), "SOCK_SEQPACKET")) {
				t.Errorf("New over a live SOCK_STREAM socket: %v, want an error that names the types", err)
			}
			c, err := net.Dial(network, path)
			if err != nil {
				t.Fatalf("live socket stolen: %v", err)
			}
			c.Close()
		})
	}
	t.Run("live silent", func(t *testing.T) {
		// Someone else's server that never answers.
		path := filepath.Join(t.TempDir(), "h.sock")
		l, err := net.Listen("unixpacket", path)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		_, err = graceful.New(graceful.Options{Path: path, Timeout: 200 * time.Millisecond})
		if !errors.Is(err, graceful.ErrAlreadyRunning) {
			t.Errorf("New over a silent socket: %v, want ErrAlreadyRunning", err)
		}
	})
	t.Run("abstract", func(t *testing.T) {
		path := fmt.Sprintf("@fdpass-graceful-test-%d", os.Getpid())
		p, err := graceful.New(graceful.Options{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if err := p.Ready(); err != nil {
			t.Fatal(err)
		}
		p2, err := graceful.New(graceful.Options{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		defer p2.Close()
		if !p2.Inherited() {
			t.Error("abstract socket: no handoff")
		}
		if err := p2.Ready(); err != nil {
			t.Fatal(err)
		}
		<-p.Exit()
	})
}

// roleOtherUID runs as another uid and tries to take over; it must be
// refused without receiving a descriptor.
func roleOtherUID() error {
	before, err := fd.Count()
	if err != nil {
		return err
	}
	_, err = graceful.New(graceful.Options{
		Path:      os.Getenv(envPath),
		Timeout:   10 * time.Second,
		Authorize: func(graceful.Peer) error { return nil },
	})
	after, cerr := fd.Count()
	if cerr != nil {
		return cerr
	}
	if after != before {
		return fmt.Errorf("%d descriptors open before New, %d after", before, after)
	}
	switch {
	case err == nil:
		return errors.New("New succeeded as another uid")
	case errors.Is(err, graceful.ErrRefused) && errors.Is(err, graceful.ErrUnauthorized):
		say("refused uid=%d: %v", os.Getuid(), err)
	case errors.Is(err, os.ErrPermission):
		say("denied uid=%d: %v", os.Getuid(), err)
	default:
		return fmt.Errorf("New: unexpected error: %w", err)
	}
	return nil
}

// TestRestartOtherUID: a successor running as another uid is refused by
// the credential check (abstract socket) or by the file mode (0600).
func TestRestartOtherUID(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to start a child with another uid")
	}
	restartCheckLeaks(t)
	// The child runs as nobody: give it a copy of the test binary it may
	// execute.
	bindir, err := os.MkdirTemp("", "graceful-test")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(bindir)
	os.Chmod(bindir, 0o755)
	bin := filepath.Join(bindir, "graceful.test")
	if err := copyFile(os.Args[0], bin); err != nil {
		t.Fatal(err)
	}
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"abstract", fmt.Sprintf("@fdpass-graceful-uid-%d", os.Getpid()), "refused uid=65534"},
		{"file", filepath.Join(bindir, "h.sock"), "denied uid=65534"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := make(chan string, 100)
			p, _ := readyGeneration(t, graceful.Options{Path: tc.path, Logger: slog.New(chanHandler(logs))})
			c := startRestartChild(t, bin, "otheruid", nobody, envPath+"="+tc.path)
			c.expect(tc.want)
			c.mustExit()
			if tc.name == "abstract" {
				awaitLine(t, logs, "refused successor")
			}
			if p.HandedOff() {
				t.Error("handed off to another uid")
			}
		})
	}
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

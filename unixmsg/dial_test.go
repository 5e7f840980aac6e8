//go:build linux

package unixmsg_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fdpass/fdpass/internal/childtest"
	"github.com/fdpass/fdpass/unixmsg"
)

// The dialler: it receives a batch with a file and prints the file's name
// and content, then sends a batch back with its end of a pipe.
var _ = childtest.Register("dial", func() error {
	c, err := unixmsg.Dial("unixpacket", os.Getenv("UNIXMSG_ADDR"), nil)
	if err != nil {
		return err
	}
	defer c.Close()
	b, err := c.Receive()
	if err != nil {
		return err
	}
	defer b.Close()
	f, err := b.File("config")
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	fmt.Printf("got name=%s content=%q\n", f.Name(), data)

	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	var reply unixmsg.Batch
	defer reply.Close()
	if err := reply.Add("pipe", r, nil, nil); err != nil {
		w.Close()
		return err
	}
	if err := c.Send(&reply); err != nil {
		w.Close()
		return err
	}
	_, err = fmt.Fprintf(w, "from pid %d", os.Getpid())
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return err
})

func TestListenDial(t *testing.T) {
	for _, tc := range []struct{ name, addr string }{
		{"path", ""},
		{"abstract", fmt.Sprintf("@fdpass-unixmsg-test-%d", os.Getpid())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			addr := tc.addr
			if addr == "" {
				addr = filepath.Join(t.TempDir(), "s")
			}
			l, err := unixmsg.Listen(addr, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if got := l.Addr().String(); got != addr {
				t.Errorf("Addr() = %q, want %q", got, addr)
			}
			path := filepath.Join(t.TempDir(), "config")
			if err := os.WriteFile(path, []byte("listen=1"), 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var b unixmsg.Batch
			defer b.Close()
			if err := b.Add("config", f, nil, nil); err != nil {
				t.Fatal(err)
			}

			child := childtest.Start(t, "dial", childtest.Options{Env: []string{"UNIXMSG_ADDR=" + addr}})
			c, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Send(&b); err != nil {
				t.Fatal(err)
			}
			if got, want := child.Expect("got "), fmt.Sprintf("got name=%s content=%q", path, "listen=1"); got != want {
				t.Errorf("child: %q, want %q", got, want)
			}
			reply, err := c.Receive()
			if err != nil {
				t.Fatal(err)
			}
			defer reply.Close()
			r, err := reply.File("pipe")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			data, err := io.ReadAll(r)
			if err != nil || string(data) != fmt.Sprintf("from pid %d", child.Pid()) {
				t.Errorf("read %q, %v from the child's pipe", data, err)
			}
			child.MustExit()
		})
	}
}

func TestListenerOptionsAndClose(t *testing.T) {
	checkLeaks(t)
	addr := filepath.Join(t.TempDir(), "s")
	l, err := unixmsg.Listen(addr, &unixmsg.Options{Limits: unixmsg.Limits{MaxItems: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := unixmsg.Listen(addr, nil); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second Listen on %s: %v, want EADDRINUSE", addr, err)
	}

	tx, err := unixmsg.Dial("unixpacket", addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	rx, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	// The accepted Conn has the listener's limits: two items are one too
	// many.
	var b unixmsg.Batch
	defer b.Close()
	for _, name := range []string{"a", "b"} {
		if err := b.AddFD(name, 0, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	errc := sendAsync(tx, &b)
	if _, err := rx.Receive(); !errors.Is(err, unixmsg.ErrLimit) {
		t.Errorf("Receive of two items with MaxItems 1: %v, want ErrLimit", err)
	}
	if err := recvErr(t, errc); !errors.Is(err, unixmsg.ErrRejected) {
		t.Errorf("Send: %v, want ErrRejected", err)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(addr); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v, want it removed", err)
	}
	if c, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		if c != nil {
			c.Close()
		}
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

// Dialling a socket of another type fails with an error that names both
// types.
func TestDialTypeMismatch(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	seq, err := unixmsg.Listen(filepath.Join(dir, "seq"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer seq.Close()
	stream, err := net.Listen("unix", filepath.Join(dir, "stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	abstract := fmt.Sprintf("@fdpass-unixmsg-mismatch-%d", os.Getpid())
	gram, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: abstract, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer gram.Close()
	abstractSeq := fmt.Sprintf("@fdpass-unixmsg-mismatch-seq-%d", os.Getpid())
	aseq, err := unixmsg.Listen(abstractSeq, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer aseq.Close()
	for _, tc := range []struct {
		network, addr string
		want          []string
	}{
		{"unix", seq.Addr().String(), []string{"is a SOCK_SEQPACKET socket (network \"unixpacket\")", "dialled SOCK_STREAM (network \"unix\")"}},
		{"unixpacket", stream.Addr().String(), []string{"is a SOCK_STREAM socket (network \"unix\")", "dialled SOCK_SEQPACKET (network \"unixpacket\")"}},
		{"unixpacket", abstract, []string{"is a SOCK_DGRAM socket (network \"unixgram\")", "dialled SOCK_SEQPACKET"}},
		{"unix", abstractSeq, []string{"is a SOCK_SEQPACKET socket (network \"unixpacket\")", "dialled SOCK_STREAM"}},
	} {
		c, err := unixmsg.Dial(tc.network, tc.addr, nil)
		if err == nil {
			c.Close()
			t.Errorf("Dial(%q, %s) succeeded", tc.network, tc.addr)
			continue
		}
		// connect(2) refuses a path to a socket of another type with
		// EPROTOTYPE; an abstract name finds no socket of its type.
		want := syscall.EPROTOTYPE
		if strings.HasPrefix(tc.addr, "@") {
			want = syscall.ECONNREFUSED
		}
		if !errors.Is(err, want) {
			t.Errorf("Dial(%q, %s): %v, want %v", tc.network, tc.addr, err, want)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Dial(%q, %s): %q does not say %q", tc.network, tc.addr, err, w)
			}
		}
	}
	// Nothing at all at an abstract name: the kernel's error, as it is.
	nobody := fmt.Sprintf("@fdpass-unixmsg-nobody-%d", os.Getpid())
	if c, err := unixmsg.Dial("unixpacket", nobody, nil); err == nil {
		c.Close()
		t.Errorf("Dial(%s) succeeded", nobody)
	} else if !errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), "same type") {
		t.Errorf("Dial(%s): %v, want ECONNREFUSED alone", nobody, err)
	}
}

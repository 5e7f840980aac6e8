//go:build linux

package graceful_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
)

// TestCompatCrossProcess: a server process hands a TCP listener, a UDP
// socket and a file to a client process through the handler API; the
// client proves each works after the server has exited, and both check
// their descriptor counts.
func TestCompatCrossProcess(t *testing.T) {
	compatCheckLeaks(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "h.sock")
	data := filepath.Join(dir, "data.txt")
	if err := os.WriteFile(data, []byte("seed-compatible"), 0o600); err != nil {
		t.Fatal(err)
	}

	server := compatStart(t, "server", "SOCK="+sock, "FILE="+data)
	ready := strings.Fields(server.line())
	if len(ready) != 3 || ready[0] != "ready" {
		t.Fatalf("server said %q", ready)
	}
	tcpAddr, udpAddr := ready[1], ready[2]

	client := compatStart(t, "client", "SOCK="+sock, "TCP="+tcpAddr)
	// The server exits once it has handed everything over and closed its
	// own copies: what works from now on works in the client.
	server.mustExit()
	if got := client.line(); got != "received tcp,udp,file" {
		t.Fatalf("client: %q", got)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after the server closed its listener: %v", err)
	}

	c, err := net.DialTimeout("tcp", tcpAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(b) != "accepted by the client\n" {
		t.Fatalf("TCP: read %q, %v", b, err)
	}

	uc, err := net.Dial("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	uc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := uc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := uc.Read(buf)
	uc.Close()
	if err != nil || string(buf[:n]) != "pong: ping" {
		t.Fatalf("UDP: read %q, %v", buf[:n], err)
	}

	if got := client.line(); got != `file "seed-compatible"` {
		t.Errorf("client: %q", got)
	}
	client.mustExit()
}

func compatRoleServer() error {
	base, err := fd.Count()
	if err != nil {
		return err
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	f, err := os.Open(os.Getenv("FILE"))
	if err != nil {
		return err
	}
	gln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: os.Getenv("SOCK"), Net: "unixpacket"})
	if err != nil {
		return err
	}
	var order []string
	delivered := make(chan struct{})
	h := graceful.SequenceHandler(
		graceful.ListenerHandler(tcp, graceful.Meta{Name: "tcp", Values: map[string]string{"addr": tcp.Addr().String()}}),
		graceful.PacketConnHandler(udp, graceful.Meta{Name: "udp"}),
		// As in the original package's example: close the unix listener
		// so that the successor can listen on the same path.
		graceful.CallbackHandler(func() { order = append(order, "close"); gln.Close() }),
		graceful.FileHandler(f, graceful.Meta{Name: "file", Custom: map[string]any{"size": 15}}),
		graceful.CallbackHandler(func() { order = append(order, "delivered"); close(delivered) }),
	)
	compatSay("ready %s %s", tcp.Addr(), udp.LocalAddr())
	if err := graceful.Serve(gln, h); err != nil {
		return fmt.Errorf("Serve: %w", err)
	}
	select {
	case <-delivered:
	default:
		return errors.New("Serve returned before the delivery callback ran")
	}
	if !slices.Equal(order, []string{"close", "delivered"}) {
		return fmt.Errorf("callbacks ran in order %q", order)
	}
	tcp.Close()
	udp.Close()
	f.Close()
	return compatAwaitCount(base)
}

func compatRoleClient() error {
	base, err := fd.Count()
	if err != nil {
		return err
	}
	var (
		names []string
		ln    net.Listener
		pc    net.PacketConn
		file  *os.File
		errs  []error
	)
	err = graceful.Receive(os.Getenv("SOCK"), func(rfd int, meta graceful.Meta) {
		names = append(names, meta.Name)
		var err error
		switch meta.Name {
		case "tcp":
			ln, err = graceful.FdListener(rfd, meta)
			if got, want := meta.Values["addr"], os.Getenv("TCP"); err == nil && got != want {
				err = fmt.Errorf("tcp meta addr %q, want %q", got, want)
			}
		case "udp":
			err = compatCheckWrongKind(rfd, meta)
			if err == nil {
				pc, err = graceful.FdPacketConn(rfd, meta)
			}
		case "file":
			if got, _ := meta.Custom["size"].(int); got != 15 {
				err = fmt.Errorf("file meta custom %v", meta.Custom)
			}
			file = os.NewFile(uintptr(rfd), meta.Name)
		default:
			err = fmt.Errorf("unexpected descriptor %q", meta.Name)
			fd.Close(rfd)
		}
		if err != nil {
			errs = append(errs, err)
		}
	})
	if err != nil {
		return fmt.Errorf("Receive: %w", err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	compatSay("received %s", strings.Join(names, ","))

	c, err := ln.Accept()
	if err != nil {
		return err
	}
	_, err = io.WriteString(c, "accepted by the client\n")
	c.Close()
	if err != nil {
		return err
	}

	pc.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		return err
	}
	if _, err := pc.WriteTo(append([]byte("pong: "), buf[:n]...), from); err != nil {
		return err
	}

	b, err := io.ReadAll(file)
	if err != nil {
		return err
	}
	compatSay("file %q", b)
	ln.Close()
	pc.Close()
	file.Close()
	return compatAwaitCount(base)
}

// compatCheckWrongKind checks that FdListener refuses a duplicate of rfd,
// a UDP socket, and closes it.
func compatCheckWrongKind(rfd int, meta graceful.Meta) error {
	before, err := fd.Count()
	if err != nil {
		return err
	}
	d, err := fd.DupFD(rfd)
	if err != nil {
		return err
	}
	if ln, err := graceful.FdListener(d, meta); !errors.Is(err, graceful.ErrFdKind) {
		if ln != nil {
			ln.Close()
		}
		return fmt.Errorf("FdListener on a UDP socket: %v, want ErrFdKind", err)
	}
	return compatAwaitCount(before)
}

// compatServe serves h on a fresh socket path in this process until the
// test ends, and returns the path and the server.
func compatServe(t testing.TB, h graceful.Handler, logger *slog.Logger) (string, *graceful.Server) {
	t.Helper()
	sock := compatSockPath(t)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	s := &graceful.Server{Handler: h, Logger: logger}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return sock, s
}

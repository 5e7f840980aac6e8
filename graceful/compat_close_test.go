//go:build linux

package graceful_test

import (
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"testing"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
)

// TestCompatServerClose: Close and an expired Shutdown cut off a client
// whose handler is still running; its batch is not delivered, its
// callback does not run, the client gets an error and nothing leaks.
func TestCompatServerClose(t *testing.T) {
	for _, how := range []string{"close", "shutdown"} {
		t.Run(how, func(t *testing.T) {
			compatCheckLeaks(t)
			f, err := os.Open(os.Args[0])
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			entered, release := make(chan struct{}), make(chan struct{})
			called := make(chan struct{}, 1)
			h := graceful.SequenceHandler(
				graceful.FileHandler(f, graceful.Meta{Name: "f"}),
				graceful.HandlerFunc(func(net.Conn, graceful.ResponseWriter) {
					close(entered)
					<-release
				}),
				graceful.CallbackHandler(func() { called <- struct{}{} }),
			)
			sock := compatSockPath(t)
			ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
			if err != nil {
				t.Fatal(err)
			}
			s := &graceful.Server{Handler: h}
			served := make(chan error, 1)
			go func() { served <- s.Serve(ln) }()
			received := make(chan error, 1)
			go func() {
				received <- graceful.Receive(sock, func(rfd int, _ graceful.Meta) {
					t.Error("callback for an undelivered batch")
					fd.Close(rfd)
				})
			}()
			<-entered
			switch how {
			case "close":
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			case "shutdown":
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
					t.Errorf("Shutdown with an ended context: %v", err)
				}
			}
			if err := <-received; err == nil {
				t.Error("Receive from a closed server succeeded")
			}
			close(release)
			if err := <-served; err != nil {
				t.Errorf("Serve: %v", err)
			}
			select {
			case <-called:
				t.Error("delivery callback ran")
			default:
			}
		})
	}
}

// TestCompatCallbacks: delivery callbacks run in order before Receive
// returns, and one that panics does not stop the others.
func TestCompatCallbacks(t *testing.T) {
	compatCheckLeaks(t)
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ran := make(chan string, 4)
	logger, msgs := newCompatLog()
	sock, _ := compatServe(t, graceful.SequenceHandler(
		graceful.CallbackHandler(func() { ran <- "first" }),
		graceful.FileHandler(f, graceful.Meta{Name: "f"}),
		graceful.CallbackHandler(func() { panic("callback bug") }),
		graceful.HandlerFunc(func(_ net.Conn, w graceful.ResponseWriter) {
			w.OnDelivered(func() { ran <- "last" })
		}),
	), logger)
	n := 0
	if err := graceful.Receive(sock, func(rfd int, _ graceful.Meta) { n++; fd.Close(rfd) }); err != nil || n != 1 {
		t.Fatalf("Receive: %v, %d descriptors", err, n)
	}
	// Receive returns after the server's callbacks: no waiting here.
	var order []string
	for len(ran) > 0 {
		order = append(order, <-ran)
	}
	if want := []string{"first", "last"}; !slices.Equal(order, want) {
		t.Errorf("callbacks ran: %q, want %q", order, want)
	}
	awaitLog(t, msgs, "graceful: delivery callback panicked")
}

//go:build linux

package graceful_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/fdpass/fdpass/graceful"
)

// The handler API, as the original package had it: the running process
// serves its listener to whoever connects to its unix socket, and the new
// process receives it.
func ExampleReceive() {
	dir, err := os.MkdirTemp("", "graceful-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "graceful.sock")

	// The running process: its web listener, and a unix socket to hand it
	// over on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	gln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		log.Fatal(err)
	}
	restart := make(chan struct{})
	go graceful.Serve(gln, graceful.SequenceHandler(
		graceful.ListenerHandler(ln, graceful.Meta{Name: "http"}),
		// Once the new process has the listener: free the socket path
		// for it, then let this process stop.
		graceful.CallbackHandler(func() { gln.Close() }),
		graceful.CallbackHandler(func() { close(restart) }),
	))

	// The new process (here, the same one).
	var inherited net.Listener
	err = graceful.Receive(sock, func(fd int, meta graceful.Meta) {
		// fd is this callback's: FdListener takes it over.
		fmt.Println("received", meta.Name)
		inherited, err = graceful.FdListener(fd, meta)
	})
	if err != nil {
		log.Fatal(err)
	}
	defer inherited.Close()

	// The old process stops using its listener; the socket stays open in
	// the new one.
	<-restart
	ln.Close()
	fmt.Println("same address:", inherited.Addr().String() == ln.Addr().String())
	// Output:
	// received http
	// same address: true
}

// A server written for the original package: only the import path
// changed.
func ExampleListenAndServe() {
	ln, err := net.Listen("tcp", "localhost:8080")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(ln, http.NotFoundHandler())

	f, err := os.OpenFile("/var/log/app.log", os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		log.Fatal(err)
	}

	done := make(chan struct{})
	go func() {
		// Every client that connects gets duplicates of ln and f, in one
		// batch; this process keeps its own.
		err := graceful.ListenAndServe("/var/run/app.sock", graceful.SequenceHandler(
			graceful.ListenerHandler(ln, graceful.Meta{Name: "http"}),
			graceful.FileHandler(f, graceful.Meta{Name: "log"}),
			graceful.CallbackHandler(func() { close(done) }),
		))
		if err != nil {
			log.Print(err)
		}
	}()
	<-done // a successor has the descriptors: drain and exit
}

// A client written for the original package.
func ExampleFdListener() {
	var ln net.Listener
	var logFile *os.File
	err := graceful.Receive("/var/run/app.sock", func(fd int, meta graceful.Meta) {
		switch meta.Name {
		case "http":
			var err error
			if ln, err = graceful.FdListener(fd, meta); err != nil {
				log.Print(err) // FdListener has closed fd
			}
		case "log":
			logFile = os.NewFile(uintptr(fd), meta.Name)
		default:
			// Unknown descriptors are the callback's too: close them.
			os.NewFile(uintptr(fd), meta.Name).Close()
		}
	})
	if err != nil {
		// Nobody to inherit from: start afresh.
		ln, err = net.Listen("tcp", "localhost:8080")
		if err != nil {
			log.Fatal(err)
		}
	}
	_ = logFile
	http.Serve(ln, http.NotFoundHandler())
}

// A Server with a logger and a timeout, stopped with Shutdown.
func ExampleServer_Shutdown() {
	ln, err := net.Listen("tcp", "localhost:8080")
	if err != nil {
		log.Fatal(err)
	}
	s := &graceful.Server{
		Handler: graceful.ListenerHandler(ln, graceful.Meta{Name: "http"}),
		Logger:  slog.Default(),
		Timeout: 10 * time.Second,
	}
	go s.ListenAndServe("@app-handoff") // an abstract socket name
	// ...
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		log.Print(err)
	}
}

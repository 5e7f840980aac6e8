//go:build linux

package systemd_test

import (
	"errors"
	"log"
	"net"
	"net/http"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful/systemd"
	"github.com/fdpass/fdpass/kinds"
)

// A server started by a socket unit with FileDescriptorName=web adopts its
// listener by name, and listens itself when started by hand.
func Example_activation() {
	set, err := systemd.Activation()
	if err != nil {
		log.Fatal(err)
	}
	defer set.Close() // closes what was passed and not taken

	ln, err := set.TakeListener("web")
	if errors.Is(err, systemd.ErrNotFound) {
		ln, err = net.Listen("tcp", ":8080")
	}
	if err != nil {
		log.Fatal(err)
	}
	set.Close()

	n, err := systemd.NewNotifier() // nil outside systemd: every call does nothing
	if err != nil {
		log.Fatal(err)
	}
	n.Ready()
	go http.Serve(ln, nil)
	// ...
	n.Stopping()
}

// An inherit-or-create API looks for what systemd passed by kind and
// address, whatever its name.
func ExampleSet_Match() {
	set, err := systemd.Activation()
	if err != nil {
		log.Fatal(err)
	}
	defer set.Close()

	var ln net.Listener
	d, err := set.Match(kinds.TCPListener, "tcp", ":8080")
	switch {
	case err == nil:
		ln, err = kinds.ToListener(d.FD) // takes ownership of d.FD
	case errors.Is(err, systemd.ErrNotFound):
		ln, err = net.Listen("tcp", ":8080")
	}
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
}

// Before it stops, a service parks its listener in systemd's descriptor
// store (FileDescriptorStoreMax= must be set); the next start finds it in
// the Set under the same name, and connections made in between wait in
// the listener's backlog.
func ExampleNotifier_Store() {
	n, err := systemd.NewNotifier()
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", ":8080")
	if err != nil {
		log.Fatal(err)
	}
	dup, err := fd.Dup(ln) // Store sends a copy and keeps nothing
	if err != nil {
		log.Fatal(err)
	}
	if err := n.Store("web", dup); err != nil {
		log.Print(err)
	}
	fd.Close(dup)
	n.Stopping()
	ln.Close()
}

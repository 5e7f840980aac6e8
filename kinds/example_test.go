//go:build linux

package kinds_test

import (
	"errors"
	"fmt"
	"log"
	"net"
	"os"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/kinds"
)

// Detect names a descriptor from the kernel's own answers.
func ExampleDetect() {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()

	n, err := fd.Dup(ln)
	if err != nil {
		log.Fatal(err)
	}
	defer fd.Close(n)

	info, err := kinds.Detect(n)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Kind, info.Network())
	// Output: tcp-listener tcp4
}

// Verify checks a kind that a peer declared against what the descriptor
// really is.
func ExampleVerify() {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer pc.Close()

	n, err := fd.Dup(pc)
	if err != nil {
		log.Fatal(err)
	}
	defer fd.Close(n)

	fmt.Println(kinds.Verify(n, kinds.UDP))
	err = kinds.Verify(n, kinds.TCPListener)
	fmt.Println(err)

	var me *kinds.MismatchError
	if errors.As(err, &me) {
		fmt.Println("it is really", me.Got)
	}
	// Output:
	// <nil>
	// kinds: descriptor is udp, declared tcp-listener
	// it is really udp
}

// FromValue and ToValue carry a Go value across a raw descriptor, as a
// receiver of passed descriptors would rebuild it.
func ExampleFromValue() {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	n, info, err := kinds.FromValue(ln)
	if err != nil {
		log.Fatal(err)
	}
	// The duplicate keeps the socket listening after the original closes.
	ln.Close()

	v, err := kinds.ToValue(n, info.Kind, "listener")
	if err != nil {
		log.Fatal(err)
	}
	ln2 := v.(net.Listener)
	defer ln2.Close()

	c, err := net.Dial("tcp4", ln2.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	s, err := ln2.Accept()
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	fmt.Printf("%v: accepted a connection\n", info.Kind)
	// Output: tcp-listener: accepted a connection
}

// A descriptor that cannot become the requested value is closed, so the
// caller never has to clean up after a failed conversion.
func ExampleToListener_error() {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer pc.Close()
	n, _, err := kinds.FromValue(pc)
	if err != nil {
		log.Fatal(err)
	}

	_, err = kinds.ToListener(n)
	fmt.Println(errors.Is(err, kinds.ErrConvert))
	// Output: true
}

// SocketNetNS tells which network namespace a socket was created in.
func ExampleSocketNetNS() {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	n, err := fd.Dup(ln)
	if err != nil {
		log.Fatal(err)
	}
	defer fd.Close(n)

	sockNS, err := kinds.SocketNetNS(n)
	if err != nil {
		// SIOCGSKNS needs CAP_NET_ADMIN.
		fmt.Fprintln(os.Stderr, err)
		return
	}
	cur, err := kinds.CurrentNetNS()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("created here:", sockNS == cur)
}

//go:build linux

package unixmsg_test

import (
	"fmt"
	"log"
	"net"

	"github.com/fdpass/fdpass/unixmsg"
)

// Two ends of a connection hand a TCP listener over, with meta and
// application state. In real use the ends are two processes: one dials the
// other's unix socket with unixmsg.Dial, or wraps an accepted
// *net.UnixConn with unixmsg.NewConn.
func Example() {
	tx, rx, err := unixmsg.Pair(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Close()
	defer rx.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()

	// Sender: the batch holds a duplicate; ln stays ours.
	var out unixmsg.Batch
	defer out.Close()
	if err := out.Add("http", ln, unixmsg.MetaOf("proto", "http/1.1"), []byte("generation 1")); err != nil {
		log.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() { sent <- tx.Send(&out) }() // returns once the receiver has it all

	// Receiver: take what you want, Close closes the rest.
	in, err := rx.Receive()
	if err != nil {
		log.Fatal(err)
	}
	defer in.Close()
	if err := <-sent; err != nil {
		log.Fatal(err)
	}
	i, _ := in.Lookup("http")
	item := in.Item(i)
	inherited, err := in.Listener("http")
	if err != nil {
		log.Fatal(err)
	}
	defer inherited.Close()
	fmt.Println(item.Kind, item.Meta.Value("proto"), string(item.Payload))
	fmt.Println(inherited.Addr().String() == ln.Addr().String())
	// Output:
	// tcp-listener http/1.1 generation 1
	// true
}

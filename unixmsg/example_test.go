//go:build linux

package unixmsg_test

import (
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"

	"github.com/fdpass/fdpass/unixmsg"
)

// Two ends of a connection hand a TCP listener over, with meta and
// application state. In real use the ends are two processes: one listens
// with unixmsg.Listen and the other dials it with unixmsg.Dial (see
// ExampleListen), or one wraps a *net.UnixConn it has with
// unixmsg.NewConn.
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

// A broker listens on a socket path and hands each worker that dials it a
// file it opened. In real use the two ends are two processes; the received
// file carries the path the broker opened.
func ExampleListen() {
	dir, err := os.MkdirTemp("", "unixmsg-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	conf := filepath.Join(dir, "app.conf")
	if err := os.WriteFile(conf, []byte("workers=4\n"), 0o600); err != nil {
		log.Fatal(err)
	}
	sock := filepath.Join(dir, "broker.sock") // or an abstract name, "@broker"

	// The broker.
	l, err := unixmsg.Listen(sock, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		f, err := os.Open(conf)
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		var b unixmsg.Batch
		defer b.Close()
		if err := b.Add("config", f, nil, nil); err != nil {
			log.Fatal(err)
		}
		if err := c.Send(&b); err != nil {
			log.Fatal(err)
		}
	}()

	// The worker.
	c, err := unixmsg.Dial("unixpacket", sock, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	b, err := c.Receive()
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	f, err := b.File("config")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(filepath.Base(f.Name()))
	fmt.Print(string(data))
	// Output:
	// app.conf
	// workers=4
}

// Command netns shows a socket crossing network namespaces: a privileged
// broker creates a TCP listener inside a named network namespace and hands
// it, with a handle on the namespace, to a worker that runs in the root
// namespace. The worker checks that the listener really lives in the
// namespace it was told about, then serves it: clients inside the
// namespace reach a process that never entered it.
//
//	ip netns add demo && ip -n demo link set lo up
//	go run ./examples/netns -role broker -ns demo &
//	go run ./examples/netns -role worker &
//	ip netns exec demo curl -s 127.0.0.1:8080
//
// Both roles need root (the broker to enter the namespace, the worker to
// ask the kernel which namespace a socket belongs to, SIOCGSKNS).
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"github.com/fdpass/fdpass/examples/internal/cli"
	"log"
	"os"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/kinds"
	"github.com/fdpass/fdpass/unixmsg"
	"github.com/vishvananda/netns"
)

func main() {
	role := flag.String("role", "", "broker or worker")
	ns := flag.String("ns", "demo", "named network namespace (broker), as made by ip netns add")
	addr := flag.String("listen", "127.0.0.1:8080", "TCP address to listen on inside the namespace (broker)")
	sock := flag.String("sock", "@fdpass-netns-broker", "unix socket where the broker hands out the listener")
	flag.Parse()
	var err error
	switch *role {
	case "broker":
		err = broker(*ns, *addr, *sock)
	case "worker":
		err = worker(*sock)
	default:
		err = errors.New("-role must be broker or worker")
	}
	if err != nil {
		log.Fatal(err)
	}
}

// broker listens inside the namespace and hands the listener to every
// worker that connects.
func broker(name, addr, sock string) error {
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("namespace %q: %w", name, err)
	}
	defer h.Close()
	id, err := fd.Identify(int(h))
	if err != nil {
		return err
	}
	ln, err := kinds.ListenInNetNS(h, "tcp", addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	l, err := unixmsg.Listen(sock, nil)
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Printf("ready broker pid=%d netns=%s id=%s addr=%s\n", os.Getpid(), name, id, ln.Addr())

	var b unixmsg.Batch
	defer b.Close()
	meta := unixmsg.MetaOf("netns", name, "netns-id", id.String())
	if err := b.Add("listener", ln, meta, nil); err != nil {
		return err
	}
	if err := b.Add("netns", h, meta, nil); err != nil {
		return err
	}
	var backoff cli.Backoff
	for {
		c, err := l.Accept()
		if err != nil {
			if backoff.Retry(err) {
				continue
			}
			return err
		}
		backoff.Reset()
		if err := c.Send(&b); err != nil {
			log.Printf("worker: %v", err)
		}
		c.Close()
	}
}

// worker takes the listener, checks where it lives, and serves it.
func worker(sock string) error {
	c, err := unixmsg.Dial("unixpacket", sock, nil)
	if err != nil {
		return err
	}
	got, err := c.Receive()
	c.Close()
	if err != nil {
		return err
	}
	defer got.Close()
	i, err := got.Lookup("listener")
	if err != nil {
		return err
	}
	meta := got.Item(i).Meta
	h, err := got.NsHandle("netns")
	if err != nil {
		return err
	}
	defer h.Close()
	want, err := fd.Identify(int(h))
	if err != nil {
		return err
	}
	lfd, err := got.TakeFD("listener")
	if err != nil {
		return err
	}
	// The socket's namespace comes from the kernel, not from the broker.
	actual, err := kinds.SocketNetNS(lfd)
	if err != nil {
		fd.Close(lfd)
		return err
	}
	here, err := kinds.CurrentNetNS()
	if err != nil {
		fd.Close(lfd)
		return err
	}
	if actual != want || actual.String() != meta.Value("netns-id") {
		fd.Close(lfd)
		return fmt.Errorf("listener lives in namespace %s, broker said %s (handle %s)", actual, meta.Value("netns-id"), want)
	}
	ln, err := kinds.ToListener(lfd)
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Printf("ready worker pid=%d netns=%s id=%s own-netns=%s addr=%s\n", os.Getpid(), meta.Value("netns"), actual, here, ln.Addr())
	var backoff cli.Backoff
	for {
		conn, err := ln.Accept()
		if err != nil {
			if backoff.Retry(err) {
				continue
			}
			return err
		}
		backoff.Reset()
		go func() {
			defer conn.Close()
			fmt.Fprintf(conn, "hello from worker pid %d, serving namespace %s from namespace %s\n", os.Getpid(), meta.Value("netns"), here)
			bufio.NewReader(conn).ReadString('\n')
		}()
	}
}

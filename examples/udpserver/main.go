// Command udpserver is a UDP echo service that restarts without losing a
// datagram: a new instance started with the same flags takes the socket
// over, and the datagrams queued in it are read by whichever instance reads
// next, exactly once.
//
//	go run ./examples/udpserver &
//	echo hello | nc -u -w1 localhost 3334
//	go run ./examples/udpserver &   # takes over; the first one exits
//
// Each reply is the datagram followed by " pid=<instance> n=<count>", count
// being how many datagrams that instance has answered. The process reports
// "ready ..." and "exit ..." lines on standard output.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fdpass/fdpass/examples/internal/cli"
	"github.com/fdpass/fdpass/graceful"
)

func main() {
	handoff := cli.Flags("udpserver")
	addr := flag.String("listen", "localhost:3334", "UDP listen `address`")
	flag.Parse()
	handoff.Reload()
	if err := run(handoff.Path(), *addr); err != nil {
		log.Fatal(err)
	}
}

func run(sock, addr string) error {
	p, err := graceful.New(graceful.Options{Path: sock})
	if err != nil {
		return err
	}
	defer p.Close()
	pc, err := p.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	defer pc.Close()
	if err := p.Ready(); err != nil {
		return err
	}
	fmt.Printf("ready pid=%d generation=%d inherited=%t addr=%s\n", os.Getpid(), p.Generation(), p.Inherited(), pc.LocalAddr())

	defer cli.UpgradeOnHUP(p)()
	stop := make(chan struct{})
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		select {
		case <-p.Exit():
		case <-sig:
		}
		close(stop)
		// Wake the reader; what it has read it still answers. The
		// successor shares the socket and reads the rest.
		pc.SetReadDeadline(time.Now())
	}()
	n := 0
	buf := make([]byte, 64<<10)
	for {
		m, from, err := pc.ReadFrom(buf)
		if m > 0 {
			n++
			reply := fmt.Appendf(append([]byte(nil), buf[:m]...), " pid=%d n=%d", os.Getpid(), n)
			if _, werr := pc.WriteTo(reply, from); werr != nil {
				return werr
			}
		}
		if err != nil {
			select {
			case <-stop:
				fmt.Printf("exit pid=%d answered=%d\n", os.Getpid(), n)
				return nil
			default:
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return err
		}
	}
}

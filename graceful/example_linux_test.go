//go:build linux

package graceful_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/fdpass/fdpass/graceful"
)

// Two generations of an HTTP server in one program, for the example's
// sake: a keep-alive client asks the first, the second takes over, and
// the client's next request, on the same connection, is answered by the
// second.
func ExampleProcess_HTTP() {
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "handoff.sock")

	generation := func() (*graceful.Process, *graceful.HTTPServer, net.Listener) {
		p, err := graceful.New(graceful.Options{Path: path, Migrate: true})
		if err != nil {
			log.Fatal(err)
		}
		ln, err := p.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		gen := p.Generation()
		hs := p.HTTP(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "generation %d", gen)
		})})
		go hs.Serve(ln)
		if err := p.Ready(); err != nil {
			log.Fatal(err)
		}
		return p, hs, ln
	}

	p1, hs1, ln := generation()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	get := func() {
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: example\r\n\r\n")
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			log.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(string(body))
	}
	get()

	p2, hs2, _ := generation() // takes over; the connection moves to it
	<-p1.Exit()
	hs1.Drain(context.Background())
	ln.Close()
	p1.Close()
	get()

	c.Close() // Drain waits for the connections to end
	hs2.Drain(context.Background())
	p2.Close()
	// Output:
	// generation 1
	// generation 2
}

// A line server whose connections migrate: each connection's reader hands
// it over at a line boundary, with its session state (here, a count of
// lines), and the successor serves it on from that state.
func ExampleConn_HandoffReader() {
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "handoff.sock")

	// serve answers each line with the generation and the count of lines
	// the connection has sent, until the connection migrates.
	serve := func(p *graceful.Process, c *graceful.Conn, count int) {
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if errors.Is(err, graceful.ErrMigrating) {
				if c.HandoffReader([]byte(fmt.Sprint(count)), r, []byte(line)) {
					return // the successor has it
				}
				continue
			}
			if err != nil {
				c.Close()
				return
			}
			count++
			fmt.Fprintf(c, "generation %d, line %d\n", p.Generation(), count)
		}
	}
	generation := func() (*graceful.Process, net.Listener) {
		p, err := graceful.New(graceful.Options{Path: path, Migrate: true})
		if err != nil {
			log.Fatal(err)
		}
		ln, err := p.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go serve(p, p.Track(c), 0)
			}
		}()
		if err := p.Ready(); err != nil {
			log.Fatal(err)
		}
		migrated, err := p.MigratedConns()
		if err != nil {
			log.Fatal(err)
		}
		for _, c := range migrated {
			var count int
			fmt.Sscan(string(c.State()), &count)
			go serve(p, c, count)
		}
		return p, ln
	}

	p1, ln := generation()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	say := func() {
		fmt.Fprintln(c, "hello")
		answer, err := r.ReadString('\n')
		if err != nil {
			log.Fatal(err)
		}
		fmt.Print(answer)
	}
	say()
	say()

	p2, _ := generation()
	<-p1.Exit()
	ln.Close()
	p1.Close()
	say()
	p2.Close()
	// Output:
	// generation 1, line 1
	// generation 1, line 2
	// generation 2, line 3
}

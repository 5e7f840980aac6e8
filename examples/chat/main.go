// Command chat is a line server with per-connection sessions whose clients
// stay connected across restarts: start a new instance with the same flags
// and it takes over the listening socket and every established connection,
// each with its session (a nickname and a line counter) and the bytes the
// old instance had read but not yet handled. Clients notice nothing.
//
//	go run ./examples/chat &
//	nc localhost 4444
//	NICK ada
//	hello                       -> ada 2 1 hello
//	(go run ./examples/chat &)  # takes over; the first one exits
//	again                       -> ada 3 2 again
//
// Each line is answered with "<nick> <count> <generation> <line>", count
// numbering the session's lines; "NICK name" sets the nickname (and is
// answered too).
//
// The process reports on standard output, one line per event:
//
//	ready pid=1234 generation=2 inherited=true migrated=1000 addr=127.0.0.1:4444
//	migrating pid=1235 conns=1000   (with -stall-migration)
//	exit pid=1234 generation=1 stayed=0 fds=7/7
//
// where stayed counts the connections that did not migrate (served to
// their end here) and fds the open descriptors at start and at exit.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fdpass/fdpass/examples/internal/cli"
	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
)

func main() {
	handoff := cli.Flags("chat")
	addr := flag.String("listen", "localhost:4444", "listen `address`")
	timeout := flag.Duration("timeout", 30*time.Second, "handoff timeout")
	drain := flag.Duration("drain", 10*time.Second, "how long the old instance serves connections that did not migrate")
	stall := flag.Bool("stall-migration", false, "as a successor, receive the connections and hang before acknowledging them (to watch a rollback)")
	verbose := flag.Bool("v", false, "log handoffs to standard error")
	flag.Parse()
	handoff.Reload()
	if err := run(handoff.Path(), *addr, *timeout, *drain, *stall, *verbose); err != nil {
		log.Fatal(err)
	}
}

// session is what a connection carries across a restart.
type session struct {
	nick  string
	count int
}

func (s session) encode() []byte { return fmt.Appendf(nil, "%d %s", s.count, s.nick) }

func decodeSession(b []byte) (session, error) {
	n, nick, ok := strings.Cut(string(b), " ")
	count, err := strconv.Atoi(n)
	if !ok || err != nil {
		return session{}, fmt.Errorf("chat: bad session state %q", b)
	}
	return session{nick: nick, count: count}, nil
}

type server struct {
	gen    int
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[*graceful.Conn]struct{}
	ending atomic.Bool
	stayed atomic.Int64 // connections closed here after the takeover
}

func run(sock, addr string, timeout, drain time.Duration, stall, verbose bool) error {
	before, err := fd.Count()
	if err != nil {
		return err
	}
	var logger *slog.Logger
	if verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	opts := graceful.Options{Path: sock, Timeout: timeout, Logger: logger, Migrate: true}
	if stall {
		opts.Migrated = func(cs []*graceful.Conn) error {
			fmt.Printf("migrating pid=%d conns=%d\n", os.Getpid(), len(cs))
			select {} // until killed
		}
	}
	p, err := graceful.New(opts)
	if err != nil {
		return err
	}
	defer p.Close()
	ln, err := p.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s := &server{gen: int(p.Generation()), conns: map[*graceful.Conn]struct{}{}}
	accepting := make(chan struct{})
	go func() {
		defer close(accepting)
		var b cli.Backoff
		for {
			// In a successor short of descriptors, not while the
			// connections that fill its room arrive.
			<-p.AcceptWait()
			c, err := ln.Accept()
			if err != nil {
				if b.Retry(err) {
					continue
				}
				return
			}
			b.Reset()
			s.serve(p.Track(c), session{nick: "anon"})
		}
	}()
	// Before Ready: from READY on, SIGHUP for the service comes to this
	// process (a container's supervisor forwards it here), and its
	// default action would end it.
	defer cli.UpgradeOnHUP(p)()
	if err := p.Ready(); err != nil {
		return err
	}
	migrated, err := p.MigratedConns()
	if errors.Is(err, graceful.ErrNoMigration) {
		fmt.Fprintln(os.Stderr, "chat:", err)
	} else if err != nil {
		return err
	}
	for _, c := range migrated {
		st, err := decodeSession(c.State())
		if err != nil {
			c.Close()
			continue
		}
		s.serve(c, st)
	}
	fmt.Printf("ready pid=%d generation=%d inherited=%t migrated=%d addr=%s\n",
		os.Getpid(), s.gen, p.Inherited(), len(migrated), ln.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-p.Exit():
		// The successor has the listener and the connections that
		// migrated; their readers have returned.
	case <-sig:
	}
	s.ending.Store(true)
	ln.Close()
	<-accepting
	// What stayed (a reader that did not reach a message boundary in
	// time) is served for a while, then closed.
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drain):
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
	}
	p.Close()
	after, err := fd.Count()
	if err != nil {
		return err
	}
	fmt.Printf("exit pid=%d generation=%d stayed=%d fds=%d/%d\n", os.Getpid(), s.gen, s.stayed.Load(), before, after)
	return nil
}

// serve reads lines from c and answers each, handing the connection over
// at a line boundary when a successor takes over.
func (s *server) serve(c *graceful.Conn, st session) {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.wg.Go(func() {
		migrated := false
		defer func() {
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			if !migrated {
				c.Close()
				if s.ending.Load() {
					s.stayed.Add(1)
				}
			}
		}()
		r := bufio.NewReader(c)
		w := bufio.NewWriter(c)
		for {
			line, err := r.ReadString('\n')
			if errors.Is(err, graceful.ErrMigrating) {
				// Between lines: everything read and not answered is in
				// line (a part of the next one) and r.
				if c.HandoffReader(st.encode(), r, []byte(line)) {
					migrated = true
					return
				}
				continue
			}
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			if nick, ok := strings.CutPrefix(line, "NICK "); ok {
				st.nick = strings.Join(strings.Fields(nick), "_")
			}
			st.count++
			fmt.Fprintf(w, "%s %d %d %s\n", st.nick, st.count, s.gen, line)
			// Answer what has arrived before waiting for more.
			if r.Buffered() == 0 || !strings.Contains(peek(r), "\n") {
				if err := w.Flush(); err != nil {
					return
				}
			}
		}
	})
}

// peek returns what r holds without consuming it.
func peek(r *bufio.Reader) string {
	b, _ := r.Peek(r.Buffered())
	return string(b)
}

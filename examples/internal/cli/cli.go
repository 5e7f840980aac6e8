// Package cli holds what the example programs' command lines share: where
// the handoff socket is (-graceful), and -reload, which asks the running
// instance to upgrade and reports the verdict (what systemd's ExecReload=
// and "docker exec CONTAINER prog -reload" run).
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fdpass/fdpass/graceful"
)

// Handoff is a program's -graceful and -reload flags.
type Handoff struct {
	name   string
	path   *string
	reload *bool
}

// Flags registers -graceful and -reload for the program name, on the
// command line's flag set. Call it before flag.Parse.
func Flags(name string) *Handoff {
	return &Handoff{
		name:   name,
		path:   flag.String("graceful", "", "handoff socket `path` (or @abstract name); default: graceful.SocketPath(\""+name+"\")"),
		reload: flag.Bool("reload", false, "ask the running instance to upgrade, wait for the verdict, exit 0 if it succeeded"),
	}
}

// Path returns the handoff socket: -graceful, or graceful.SocketPath's
// choice for the program. It exits the program if there is none.
func (h *Handoff) Path() string {
	if *h.path != "" {
		return *h.path
	}
	p, err := graceful.SocketPath(h.name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", h.name, err)
		os.Exit(1)
	}
	return p
}

// Reload, if -reload was given, asks the instance serving the handoff
// socket to upgrade, prints the verdict and exits: 0 once the successor
// has taken over, 1 (with the reason on standard error) otherwise. It
// returns at once without -reload.
func (h *Handoff) Reload() {
	if !*h.reload {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), reloadWait)
	defer cancel()
	pid, err := graceful.RequestUpgrade(ctx, h.Path())
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: reload: %v\n", h.name, err)
		os.Exit(1)
	}
	fmt.Printf("upgraded successor=%d\n", pid)
	os.Exit(0)
}

// reloadWait bounds how long -reload waits for the verdict: within the 90
// seconds systemd gives a reload command by default (TimeoutStartSec=,
// which ExecReload= runs under), so that the reason reaches the journal
// before systemd kills the command, and well over a handoff's own bound
// (graceful's default Options.Timeout, 30 seconds).
const reloadWait = 80 * time.Second

// UpgradeOnHUP has every SIGHUP start p's successor (Process.Upgrade, the
// verdict logged on standard error), until the returned function is
// called. examples/httpserver does the same in its own signal loop.
func UpgradeOnHUP(p *graceful.Process) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				if err := p.Upgrade(context.Background()); err != nil {
					fmt.Fprintf(os.Stderr, "reload: %v\n", err)
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}

// Backoff keeps an accept loop alive through errors, as net/http's does:
// out of descriptors (EMFILE) under a flood of connections, the loop
// must wait for some to be freed, not end the service. Only a closed
// listener ends it.
type Backoff struct {
	delay time.Duration
}

// Retry reports whether to accept again after err, having waited: twice
// as long as the last time, up to a second. The first error of a run is
// said on standard error.
func (b *Backoff) Retry(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	if b.delay == 0 {
		fmt.Fprintf(os.Stderr, "accept: %v; retrying\n", err)
	}
	b.delay = min(max(2*b.delay, 5*time.Millisecond), time.Second)
	time.Sleep(b.delay)
	return true
}

// Reset starts over after a connection was accepted.
func (b *Backoff) Reset() { b.delay = 0 }

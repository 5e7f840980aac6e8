// Package load drives strict HTTP/1.1 load at a server, for the examples'
// end-to-end tests and the demo: it counts every request that fails and
// never retries one.
//
// Go's http.Client is not used on purpose: its Transport silently sends a
// GET again when a reused keep-alive connection dies before the response,
// which hides exactly the failures a restart must not cause. Each client
// here writes its requests on its own net.Conn and reads the responses with
// http.ReadResponse; a request that ends in any error, a status other than
// 200 or a body that fails the check is a failed request, counted once, and
// the next request is a new one.
//
// A keep-alive client sends one request after another on one connection.
// It tells two ways of changing server instance apart, by a response header
// that names the instance (X-Instance by default):
//
//   - migrated: the same TCP connection, never redialled, is answered by a
//     different instance than its previous response;
//   - redialled: the server answered with "Connection: close", the client
//     closed the connection and dials a new one for its next request (not
//     a failure, but counted on its own).
//
// A one-shot client opens a connection for each request and asks the server
// to close it ("Connection: close"); a response that does not say it closes
// the connection fails.
//
// Latency is measured per request from the dial (if any) or the write to
// the end of the body. Stats reports the slowest request overall; a Window
// reports the request that waited longest while it was open (counted from
// its opening, finished or still in flight), so that a window opened at a
// takeover's READY leaves out what came before.
//
// A test uses it like this:
//
//	ld, err := load.Start(load.Options{Addr: addr, KeepAlive: 64, OneShot: 8})
//	...
//	defer ld.Stop()
//	w := ld.Window()
//	// start the successor, wait for the old instance to exit
//	ld.AwaitInstance(strconv.Itoa(successor.PID()), 30*time.Second)
//	st := w.Close() // st.Failed, st.Migrated, st.Redialled, st.Slowest
//	total := ld.Stop()
package load

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures a Load. The zero value of each field but Addr means
// its default.
type Options struct {
	// Addr is the server's TCP address, host:port.
	Addr string
	// KeepAlive is the number of keep-alive clients.
	KeepAlive int
	// OneShot is the number of one-request-per-connection clients.
	OneShot int
	// Path is the request target. If empty, "/".
	Path string
	// Timeout bounds each request, dial included. If zero, 5 seconds.
	Timeout time.Duration
	// InstanceHeader names the response header that says which server
	// instance answered; a response without it fails. If empty,
	// "X-Instance".
	InstanceHeader string
	// Check, if set, checks the body of a 200 response; an error fails
	// the request.
	Check func(body []byte) error
	// Dial, if set, opens the clients' connections (over TLS, or a unix
	// socket, say) by the deadline of the request that needs one. If nil,
	// a TCP connection to Addr.
	Dial func(deadline time.Time) (net.Conn, error)
	// Pause is how long each client waits between the end of a request
	// and the start of its next. If zero, the next starts at once.
	Pause time.Duration
}

// Defaults.
const (
	defaultTimeout  = 5 * time.Second
	defaultPath     = "/"
	defaultInstance = "X-Instance"
	// failPause spaces out the requests of a client after a failure, so
	// that a server that is down does not make the clients spin.
	failPause = 10 * time.Millisecond
	// keptErrors is how many error messages Stats keeps.
	keptErrors = 10
)

// Load is a set of clients running against one server.
type Load struct {
	opts    Options
	start   time.Time
	clients []*client
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup

	errMu  sync.Mutex
	errs   []string
	nerrs  int64
	open   atomic.Pointer[[]*Window] // windows open, copied on write
	openMu sync.Mutex                // serialises changes to open
}

// Start starts the clients. They run until Stop.
func Start(opts Options) (*Load, error) {
	if opts.Addr == "" {
		return nil, errors.New("load: no address")
	}
	if opts.KeepAlive < 0 || opts.OneShot < 0 || opts.KeepAlive+opts.OneShot == 0 {
		return nil, errors.New("load: no clients")
	}
	if opts.Path == "" {
		opts.Path = defaultPath
	}
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	if opts.InstanceHeader == "" {
		opts.InstanceHeader = defaultInstance
	}
	l := &Load{opts: opts, start: time.Now(), stop: make(chan struct{})}
	l.open.Store(&[]*Window{})
	for i := range opts.KeepAlive + opts.OneShot {
		l.clients = append(l.clients, newClient(l, i, i < opts.KeepAlive))
	}
	for _, c := range l.clients {
		l.wg.Go(c.run)
	}
	return l, nil
}

// Stop stops the clients, lets each finish the request it has in flight
// (within Options.Timeout), closes their connections and returns the final
// Stats. It may be called more than once.
func (l *Load) Stop() Stats {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	return l.Stats()
}

// stopped reports whether Stop was called.
func (l *Load) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

// Stats returns the counts so far. Requests in flight are not counted yet.
func (l *Load) Stats() Stats {
	s := Stats{Instances: map[string]int64{}, Clients: make([]ClientStats, len(l.clients)), Elapsed: time.Since(l.start)}
	for i, c := range l.clients {
		cs := c.snapshot(s.Instances)
		s.Clients[i] = cs
		s.OK += cs.OK
		s.Failed += cs.Failed
		s.Dials += cs.Dials
		s.Migrated += cs.Migrated
		s.Redialled += cs.Redialled
		s.ConnectFailed += cs.ConnectFailed
		s.Refused += cs.Refused
		if cs.Slowest.Duration > s.Slowest.Duration {
			s.Slowest = cs.Slowest
		}
	}
	l.errMu.Lock()
	s.Errors = append([]string(nil), l.errs...)
	s.ErrorCount = l.nerrs
	l.errMu.Unlock()
	return s
}

// fail records the message of a failed request.
func (l *Load) fail(msg string) {
	l.errMu.Lock()
	l.nerrs++
	if len(l.errs) < keptErrors {
		l.errs = append(l.errs, msg)
	}
	l.errMu.Unlock()
}

// done reports a finished request to the open windows.
func (l *Load) done(r Request) {
	for _, w := range *l.open.Load() {
		w.observe(r)
	}
}

// AwaitInstance polls until every client's last answer came from the
// instance id (as the server names it in Options.InstanceHeader), and
// returns the Stats that show it; or an error, with the Stats, if that
// takes longer than timeout.
func (l *Load) AwaitInstance(id string, timeout time.Duration) (Stats, error) {
	deadline := time.Now().Add(timeout)
	for {
		s := l.Stats()
		moved := 0
		for _, c := range s.Clients {
			if c.Instance == id {
				moved++
			}
		}
		if moved == len(s.Clients) {
			return s, nil
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("load: %d of %d clients answered by instance %s within %v", moved, len(s.Clients), id, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// AwaitInFlight polls until some client has had a request in flight for
// between least and most, and returns when it began; or an error if no
// client does within timeout. A test that needs a request in the server's
// hands when it acts (a takeover that must find a busy connection) waits
// with it for a request old enough to have been read, and young enough to
// last through what the test does next.
func (l *Load) AwaitInFlight(least, most, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		now := time.Now()
		for _, c := range l.clients {
			start := c.inFlight.Load()
			if start == 0 {
				continue
			}
			if age := now.Sub(time.Unix(0, start)); age >= least && age <= most {
				return time.Unix(0, start), nil
			}
		}
		if now.After(deadline) {
			return time.Time{}, fmt.Errorf("load: no request in flight for between %v and %v within %v", least, most, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// Slow clients at a takeover: SlowClients keep-alive clients whose every
// request the server takes SlowRequest to answer (the examples' /slow?ms=).
// Before each takeover a test waits (AwaitSlowBusy) for one of them to have
// had a request in flight for between SlowBusyMin (the server has read it)
// and SlowBusyMax (it lasts 1.5 s more, through the takeover): the clients
// fall into step, since their connections move together after their
// answers, and a takeover that came between two of their requests would
// find none busy.
const (
	SlowClients = 4
	SlowRequest = 2 * time.Second
	SlowBusyMin = 100 * time.Millisecond
	SlowBusyMax = 500 * time.Millisecond
)

// StartSlow starts the slow clients against addr, each request bounded by
// timeout (at least SlowRequest).
func StartSlow(addr string, timeout time.Duration) (*Load, error) {
	return Start(Options{Addr: addr, KeepAlive: SlowClients, Path: fmt.Sprintf("/slow?ms=%d", SlowRequest.Milliseconds()), Timeout: max(timeout, SlowRequest)})
}

// AwaitSlowBusy waits, for at most timeout, for a slow request that the
// next takeover will find in the server's hands (AwaitInFlight).
func (l *Load) AwaitSlowBusy(timeout time.Duration) (time.Time, error) {
	return l.AwaitInFlight(SlowBusyMin, SlowBusyMax, timeout)
}

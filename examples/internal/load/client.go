package load

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// client is one keep-alive or one-shot client.
type client struct {
	l         *Load
	id        int
	keepAlive bool
	request   []byte
	inFlight  atomic.Int64 // start of the request in flight, in Unix nanoseconds; 0: none

	mu        sync.Mutex
	st        ClientStats
	instances map[string]int64
}

func newClient(l *Load, id int, keepAlive bool) *client {
	conn := "keep-alive"
	if !keepAlive {
		conn = "close"
	}
	req := fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: fdpass-load\r\nConnection: %s\r\n\r\n", l.opts.Path, l.opts.Addr, conn)
	return &client{l: l, id: id, keepAlive: keepAlive, request: req, st: ClientStats{KeepAlive: keepAlive}, instances: map[string]int64{}}
}

// conn is a client's connection and what it learnt from it.
type conn struct {
	c        net.Conn
	r        *bufio.Reader
	instance string // the instance of the last response on it
}

// run sends requests until the Load stops. A failed request ends its
// connection; the next request, a new one, goes on a new connection.
func (cl *client) run() {
	var cn *conn
	defer func() {
		if cn != nil {
			cn.c.Close()
		}
	}()
	for !cl.l.stopped() {
		start := time.Now()
		cl.inFlight.Store(start.UnixNano())
		var err error
		var dialled, closing bool
		var instance string
		if cn == nil {
			cn, err = cl.dial(start)
			dialled = err == nil
		}
		if err == nil {
			instance, closing, err = cl.exchange(cn, start)
		}
		end := time.Now()
		cl.inFlight.Store(0)
		r := cl.record(Request{Client: cl.id, Start: start, Duration: end.Sub(start), Instance: instance, Err: err}, cn, dialled, closing)
		cl.l.done(r)
		if err != nil || closing || !cl.keepAlive {
			if cn != nil {
				cn.c.Close()
				cn = nil
			}
		} else {
			cn.instance = instance
		}
		pause := cl.l.opts.Pause
		if err != nil {
			pause = max(pause, failPause)
		}
		if pause > 0 {
			select {
			case <-cl.l.stop:
			case <-time.After(pause):
			}
		}
	}
}

// dial opens a connection within the request's deadline.
func (cl *client) dial(start time.Time) (*conn, error) {
	deadline := start.Add(cl.l.opts.Timeout)
	var c net.Conn
	var err error
	if cl.l.opts.Dial != nil {
		c, err = cl.l.opts.Dial(deadline)
	} else {
		d := net.Dialer{Deadline: deadline}
		c, err = d.Dial("tcp", cl.l.opts.Addr)
	}
	if err != nil {
		return nil, err
	}
	return &conn{c: c, r: bufio.NewReader(c)}, nil
}

// exchange sends one request on cn and reads its response whole. closing
// reports that the server asked to close the connection.
func (cl *client) exchange(cn *conn, start time.Time) (instance string, closing bool, err error) {
	if err := cn.c.SetDeadline(start.Add(cl.l.opts.Timeout)); err != nil {
		return "", false, err
	}
	if _, err := cn.c.Write(cl.request); err != nil {
		return "", false, err
	}
	resp, err := http.ReadResponse(cn.r, nil)
	if err != nil {
		return "", false, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", false, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", false, fmt.Errorf("status %s: %q", resp.Status, trim(body))
	}
	instance = resp.Header.Get(cl.l.opts.InstanceHeader)
	if instance == "" {
		return "", false, fmt.Errorf("no %s header in the response", cl.l.opts.InstanceHeader)
	}
	if cl.l.opts.Check != nil {
		if err := cl.l.opts.Check(body); err != nil {
			return "", false, err
		}
	}
	if !cl.keepAlive && !resp.Close {
		return "", false, fmt.Errorf("the server did not close the connection a one-shot request asked to close")
	}
	return instance, resp.Close, nil
}

// record counts one request and returns it with Moved set. cn is the
// connection it went on (nil if the dial failed); dialled says the request
// opened it.
func (cl *client) record(r Request, cn *conn, dialled, closing bool) Request {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	st := &cl.st
	if dialled {
		st.Dials++
	}
	if r.Err == nil {
		r.Moved = st.Instance != "" && r.Instance != st.Instance
	}
	if r.Duration > st.Slowest.Duration {
		st.Slowest = r
	}
	if r.Err != nil {
		st.Failed++
		kind := "keep-alive"
		if !cl.keepAlive {
			kind = "one-shot"
		}
		cl.l.fail(fmt.Sprintf("%s client %d, request %d at %s: %v",
			kind, cl.id, st.OK+st.Failed, r.Start.Sub(cl.l.start).Round(time.Millisecond), r.Err))
		return r
	}
	st.OK++
	st.Instance = r.Instance
	cl.instances[r.Instance]++
	if cl.keepAlive {
		if !dialled && cn.instance != r.Instance {
			st.Migrated++
		}
		if closing {
			st.Redialled++
		}
	}
	return r
}

// snapshot returns the client's counts and adds its requests per instance
// to byInstance.
func (cl *client) snapshot(byInstance map[string]int64) ClientStats {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	st := cl.st
	if start := cl.inFlight.Load(); start != 0 {
		st.InFlightSince = time.Unix(0, start)
	}
	for k, v := range cl.instances {
		byInstance[k] += v
	}
	return st
}

// trim shortens a body quoted in an error.
func trim(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}

package flood

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Idle is a set of keep-alive HTTP connections to one server, each idle
// between requests: what a server at its descriptor limit holds most of.
type Idle struct {
	conns []idleConn
}

type idleConn struct {
	c net.Conn
	r *bufio.Reader
}

// Answers counts the answers to one request on each connection of an
// Idle, by the instance that gave them (its X-Instance header).
type Answers struct {
	By map[string]int
	// Closing counts, by instance, the answers that came with
	// "Connection: close": the server closes those connections after.
	Closing map[string]int
}

func (a Answers) String() string {
	return fmt.Sprintf("answered by %v, of which with Connection: close %v", a.By, a.Closing)
}

// OpenIdle dials addr n times and has one request answered on each
// connection. On error it closes what it opened.
func OpenIdle(addr string, n int) (*Idle, error) {
	d := &Idle{conns: make([]idleConn, n)}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := w; i < n; i += 32 {
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err != nil {
					errs[i] = err
					continue
				}
				d.conns[i] = idleConn{c: c, r: bufio.NewReader(c)}
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("connection %d of %d: %w", i, n, err)
		}
	}
	if _, err := d.Next(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Len returns how many connections are open.
func (d *Idle) Len() int { return len(d.conns) }

// Next sends one request on every connection at once, 32 at a time, and
// reads the answers. A connection whose answer says "Connection: close"
// is closed and dropped. The first request that fails (no answer within
// 10 s, a status other than 200, no X-Instance) is the error, after every
// connection had its turn; connections that failed are dropped too.
func (d *Idle) Next() (Answers, error) {
	a := Answers{By: map[string]int{}, Closing: map[string]int{}}
	keep := make([]bool, len(d.conns))
	errs := make([]error, len(d.conns))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := w; i < len(d.conns); i += 32 {
				inst, closing, err := d.conns[i].get()
				if err != nil {
					errs[i] = fmt.Errorf("connection %d: %w", i, err)
					continue
				}
				mu.Lock()
				a.By[inst]++
				if closing {
					a.Closing[inst]++
				}
				mu.Unlock()
				keep[i] = !closing
			}
		})
	}
	wg.Wait()
	var kept []idleConn
	for i, c := range d.conns {
		if keep[i] {
			kept = append(kept, c)
		} else {
			c.c.Close()
		}
	}
	d.conns = kept
	for _, err := range errs {
		if err != nil {
			return a, err
		}
	}
	return a, nil
}

// get makes one request and returns the instance that answered and
// whether it closes the connection after.
func (c idleConn) get() (inst string, closing bool, err error) {
	c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.c, "GET / HTTP/1.1\r\nHost: idle\r\n\r\n"); err != nil {
		return "", false, err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return "", false, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	inst = resp.Header.Get("X-Instance")
	switch {
	case err != nil:
		return "", false, err
	case resp.StatusCode != http.StatusOK:
		return "", false, fmt.Errorf("status %d", resp.StatusCode)
	case inst == "":
		return "", false, fmt.Errorf("no X-Instance header")
	}
	return inst, resp.Close, nil
}

// Close closes every connection.
func (d *Idle) Close() {
	for _, c := range d.conns {
		if c.c != nil {
			c.c.Close()
		}
	}
	d.conns = nil
}

// CheckSplit checks the answers to the first request on n idle
// connections after a takeover from instance old to next, whose successor
// had room for some of them only: next answers those that moved and keeps
// them open; old answers the others, each with "Connection: close", as
// it drains; nobody else answers and every request has its answer.
func CheckSplit(a Answers, n int, old, next string) error {
	moved, stayed := a.By[next], a.By[old]
	switch {
	case moved+stayed != n || len(a.By) > 2:
		return fmt.Errorf("%d connections: %v; want every one answered by %s or %s", n, a, old, next)
	case moved == 0 || stayed == 0:
		return fmt.Errorf("%d connections: %v; want some answered by each: the successor's descriptor limit cannot hold them all", n, a)
	case a.Closing[next] != 0 || a.Closing[old] != stayed:
		return fmt.Errorf("%d connections: %v; want those answered by %s kept open and the others closed", n, a, next)
	}
	return nil
}

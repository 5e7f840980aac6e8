package graceful

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// HTTP/2 in an HTTPServer. A connection that turns to HTTP/2 never
// migrates: net/http's HTTP/2 server reads it frame by frame, with no
// point where nothing of a frame is held. At the takeover it gets GOAWAY
// instead, idle or not, in the two steps RFC 9113 (section 6.8) asks of a
// graceful shutdown: first a GOAWAY naming the highest stream identifier
// and a PING; once the client has acknowledged the PING and opened no
// stream for h2Quiet since, every stream it opened before it heard of the
// shutdown has arrived, and net/http's HTTP/2 server sends its own GOAWAY,
// naming the last stream it took, and finishes those. A single GOAWAY
// would refuse a stream the client opened while it was under way, and the
// client would send that request again. (The PING's acknowledgement alone
// is not enough: Go's client numbers a stream, then writes its HEADERS,
// and may acknowledge the PING in between.)
//
// net/http sends its GOAWAY to a connection with no response in hand only
// from Server.Shutdown, which also closes idle HTTP/1 connections, under
// clients that may be sending on them. So HTTP/2 is served by the
// implementation a second Server sets up, which serves nothing itself:
// its Shutdown reaches the HTTP/2 connections only.

type tlsNextProto = func(*http.Server, *tls.Conn, http.Handler)

// Names of net/http's HTTP/2 in TLSNextProto: over TLS, and cleartext
// with the preface read.
const (
	protoH2        = "h2"
	protoCleartext = "unencrypted_http2"
)

// setupHTTP2 sets srv.TLSNextProto to net/http's HTTP/2, as configured by
// srv.Protocols and srv.HTTP2, on a Server of its own, and starts waiting
// for the takeover. Entries the application set stay, and only take the
// connection out of migration.
func (hs *HTTPServer) setupHTTP2() {
	srv := hs.srv
	if srv.TLSNextProto != nil {
		for proto, next := range srv.TLSNextProto {
			srv.TLSNextProto[proto] = hs.staying(next)
		}
		return
	}
	// ConfigureServer copies these into the HTTP/2 server; the rest it
	// reads from srv for each connection.
	h2 := &http.Server{Protocols: srv.Protocols, IdleTimeout: srv.IdleTimeout, ReadTimeout: srv.ReadTimeout, ErrorLog: srv.ErrorLog}
	// Serve sets up HTTP/2 first (unless srv.Protocols or GODEBUG rule it
	// out), then fails to accept.
	h2.Serve(noListener{})
	serve, ok := h2.TLSNextProto[protoCleartext]
	if !ok {
		return
	}
	srv.TLSNextProto = map[string]tlsNextProto{
		protoH2: func(s *http.Server, tc *tls.Conn, h http.Handler) {
			// Served as the cleartext kind is, whose preface net/http
			// has read: read it here.
			tc.SetReadDeadline(time.Now().Add(prefaceTimeout))
			var b [len(h2Preface)]byte
			if _, err := io.ReadFull(tc, b[:]); err != nil || string(b[:]) != h2Preface {
				tc.Close()
				return
			}
			tc.SetReadDeadline(time.Time{})
			c := &h2TLSConn{h2Conn{Conn: tc}, tc}
			hs.serveH2(serve, s, &c.h2Conn, c, h)
		},
		protoCleartext: func(s *http.Server, tc *tls.Conn, h http.Handler) {
			nc := cleartext(tc)
			if c, ok := nc.(*Conn); ok {
				c.Stay()
			}
			c := &h2Conn{Conn: nc}
			hs.serveH2(serve, s, c, c, h)
		},
	}
	hs.h2.Store(h2)
	go func() {
		<-hs.p.Exit()
		hs.goAway()
	}()
}

// h2Preface opens every HTTP/2 connection.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// prefaceTimeout bounds the wait for the preface of an HTTP/2 connection
// over TLS, as net/http's HTTP/2 server bounds its own.
const prefaceTimeout = 10 * time.Second

// cleartext returns the connection inside the *tls.Conn that net/http
// passes for cleartext HTTP/2.
func cleartext(tc *tls.Conn) net.Conn {
	nc := tc.NetConn()
	if u, ok := nc.(interface{ UnencryptedNetConn() net.Conn }); ok {
		return u.UnencryptedNetConn()
	}
	return nc
}

// plainConn passes a connection to net/http's HTTP/2 as cleartext.
type plainConn struct {
	net.Conn // nil: net/http calls UnencryptedNetConn only
	c        net.Conn
}

func (p plainConn) UnencryptedNetConn() net.Conn { return p.c }

// serveH2 serves c with net/http's HTTP/2 (nc: c, or c with its TLS
// state), its preface read.
func (hs *HTTPServer) serveH2(serve tlsNextProto, s *http.Server, c *h2Conn, nc net.Conn, h http.Handler) {
	c.acked = make(chan struct{})
	c.done = make(chan struct{})
	hs.h2mu.Lock()
	if hs.h2conns == nil {
		hs.h2conns = map[*h2Conn]struct{}{}
	}
	hs.h2conns[c] = struct{}{}
	hs.h2mu.Unlock()
	defer func() {
		hs.h2mu.Lock()
		delete(hs.h2conns, c)
		hs.h2mu.Unlock()
		close(c.done)
	}()
	if hs.ending() {
		// Arrived after the takeover: it hears of it at once.
		c.announce()
	}
	serve(s, tls.Client(plainConn{c: nc}, nil), h)
}

// goAway sends GOAWAY to the HTTP/2 connections, in two steps: their
// streams finish, and they close.
func (hs *HTTPServer) goAway() {
	h2 := hs.h2.Load()
	if h2 == nil {
		return
	}
	hs.h2round.Lock()
	defer hs.h2round.Unlock()
	hs.h2mu.Lock()
	conns := make([]*h2Conn, 0, len(hs.h2conns))
	for c := range hs.h2conns {
		conns = append(conns, c)
	}
	hs.h2mu.Unlock()
	for _, c := range conns {
		c.announce()
	}
	deadline := time.NewTimer(settleWait)
	defer deadline.Stop()
	for _, c := range conns {
		select {
		case <-c.acked:
		case <-c.done:
		case <-deadline.C:
			h2.Shutdown(context.Background())
			return
		}
	}
	for {
		// When every connection will have settled, if none opens a
		// stream meanwhile.
		var at time.Time
		for _, c := range conns {
			if t := c.settled(); t.After(at) {
				at = t
			}
		}
		wait := time.Until(at)
		if wait <= 0 {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
			continue
		case <-deadline.C:
		}
		t.Stop()
		break
	}
	// It has no connection to wait for: it runs the HTTP/2 server's
	// graceful shutdown and returns.
	h2.Shutdown(context.Background())
}

// Bounds of the first step of a GOAWAY: how long after the client's last
// new stream (or its acknowledgement) a connection counts as settled, and
// how long the wait for every connection to settle may last (a client that
// does not answer, or keeps opening streams, gets the second GOAWAY
// regardless).
const (
	h2Quiet    = 100 * time.Millisecond
	settleWait = 2 * time.Second
)

// staying returns next, preceded by taking the connection out of
// migration.
func (hs *HTTPServer) staying(next tlsNextProto) tlsNextProto {
	return func(s *http.Server, tc *tls.Conn, h http.Handler) {
		if c, ok := cleartext(tc).(*Conn); ok {
			c.Stay()
		}
		next(s, tc, h)
	}
}

// h2Conn is an HTTP/2 connection as net/http's HTTP/2 server reads and
// writes it: it follows the frames both ways, so that it can put the first
// GOAWAY and its PING between two of the server's frames, and see the
// client acknowledge the PING.
type h2Conn struct {
	net.Conn
	acked chan struct{} // closed when the client acknowledged the PING
	done  chan struct{} // closed when the connection is served no more
	smu   sync.Mutex
	ackAt time.Time // when the client acknowledged the PING
	newAt time.Time // when it last opened a stream

	wmu       sync.Mutex
	out       frameCursor // the server's frames
	pending   []byte      // frames to write at the next boundary
	announced bool

	in    frameCursor // the client's frames (one reader)
	ack   bool        // the frame being read is a PING acknowledgement
	ackOK bool        // and its data so far is ours
	once  sync.Once
}

// h2TLSConn is an h2Conn over TLS, whose state net/http's HTTP/2 checks.
type h2TLSConn struct {
	h2Conn
	tls *tls.Conn
}

func (c *h2TLSConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }

// pingData marks the PING of the first GOAWAY.
var pingData = [8]byte{'f', 'd', 'p', 'a', 's', 's', 'g', 'a'}

// settled returns when the connection, acknowledged (or served no more),
// is settled, unless the client opens a stream meanwhile.
func (c *h2Conn) settled() time.Time {
	select {
	case <-c.done:
		return time.Time{}
	default:
	}
	c.smu.Lock()
	defer c.smu.Unlock()
	last := c.ackAt
	if c.newAt.After(last) {
		last = c.newAt
	}
	return last.Add(h2Quiet)
}

// announce queues the first GOAWAY (the highest stream identifier, no
// error) and its PING, to go out between two of the server's frames, once
// the server has sent its first (its SETTINGS must come first).
func (c *h2Conn) announce() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.announced {
		return
	}
	c.announced = true
	b := appendFrameHeader(nil, 8, frameGoAway, 0, 0)
	b = append(b, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0)
	b = appendFrameHeader(b, 8, framePing, 0, 0)
	c.pending = append(b, pingData[:]...)
	if c.out.between() {
		c.flushPending()
	}
}

// flushPending writes the queued frames, with c.wmu held.
func (c *h2Conn) flushPending() error {
	p := c.pending
	c.pending = nil
	_, err := c.Conn.Write(p)
	return err
}

func (c *h2Conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	written := 0
	for len(b) > 0 {
		k := len(b)
		if c.pending != nil {
			if c.out.between() {
				if err := c.flushPending(); err != nil {
					return written, err
				}
				continue
			}
			k = c.out.span(len(b))
		}
		n, err := c.Conn.Write(b[:k])
		c.out.feed(b[:n], nil)
		written += n
		if err != nil {
			return written, err
		}
		b = b[k:]
	}
	if c.pending != nil && c.out.between() {
		c.flushPending()
	}
	return written, nil
}

func (c *h2Conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.in.feed(b[:n], c.inspect)
	return n, err
}

// inspect sees the client's frames: the header of each, then its payload
// in pieces; it watches for the acknowledgement of pingData.
func (c *h2Conn) inspect(h *[9]byte, payload []byte, off int) {
	if payload == nil {
		if h[3] == frameHeaders {
			c.smu.Lock()
			c.newAt = time.Now()
			c.smu.Unlock()
		}
		c.ack = h[3] == framePing && h[4]&flagAck != 0 && frameLen(h) == len(pingData)
		c.ackOK = c.ack
		return
	}
	if !c.ack {
		return
	}
	c.ackOK = c.ackOK && bytes.Equal(payload, pingData[off:off+len(payload)])
	if c.ackOK && off+len(payload) == len(pingData) {
		c.once.Do(func() {
			c.smu.Lock()
			c.ackAt = time.Now()
			c.smu.Unlock()
			close(c.acked)
		})
	}
}

// HTTP/2 frames (RFC 9113, section 4.1): a 9-byte header, then the
// payload.
const (
	frameHeaders = 0x1
	frameGoAway  = 0x7
	framePing    = 0x6
	flagAck      = 0x1
)

func appendFrameHeader(b []byte, n int, typ, flags byte, stream uint32) []byte {
	return append(b, byte(n>>16), byte(n>>8), byte(n), typ, flags,
		byte(stream>>24)&0x7f, byte(stream>>16), byte(stream>>8), byte(stream))
}

func frameLen(h *[9]byte) int { return int(h[0])<<16 | int(h[1])<<8 | int(h[2]) }

// frameCursor follows a stream of frames: where the next frame starts.
type frameCursor struct {
	hdr    [9]byte
	hn     int // header bytes seen of the frame at hand
	left   int // payload bytes still to come
	frames int // frames seen whole
}

// between reports whether the stream is between frames, after the first.
func (f *frameCursor) between() bool { return f.hn == 0 && f.frames > 0 }

// span returns how many of the next n bytes belong to the frame at hand
// (or its header): writing no more keeps the stream at a boundary.
func (f *frameCursor) span(n int) int {
	if f.hn < len(f.hdr) {
		return min(n, len(f.hdr)-f.hn)
	}
	return min(n, f.left)
}

// feed follows b; see, if not nil, is shown each header once whole (with
// a nil payload) and the payload in pieces, with their offsets.
func (f *frameCursor) feed(b []byte, see func(h *[9]byte, payload []byte, off int)) {
	for len(b) > 0 {
		if f.hn < len(f.hdr) {
			k := copy(f.hdr[f.hn:], b)
			f.hn += k
			b = b[k:]
			if f.hn < len(f.hdr) {
				return
			}
			f.left = frameLen(&f.hdr)
			if see != nil {
				see(&f.hdr, nil, 0)
			}
		} else {
			k := min(f.left, len(b))
			if see != nil {
				see(&f.hdr, b[:k], frameLen(&f.hdr)-f.left)
			}
			f.left -= k
			b = b[k:]
		}
		if f.left == 0 {
			f.hn = 0
			f.frames++
		}
	}
}

// noListener accepts nothing.
type noListener struct{}

func (noListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (noListener) Close() error              { return nil }
func (noListener) Addr() net.Addr            { return &net.TCPAddr{} }

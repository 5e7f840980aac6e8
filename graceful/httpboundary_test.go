//go:build linux

package graceful_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestHTTPBoundaries: traffic whose bytes fall on net/http's 4 KiB reads,
// where a read of a full buffer could be taken for one made with the
// reader empty, across takeovers: HTTP/2 DATA frames of exactly 4,096
// bytes (Go's transport, cleartext), HTTP/1 requests whose body ends on a
// 4 KiB boundary (4,096 and 8,192 bytes in all), and pipelined HTTP/1
// requests sent in one write split at 4 KiB (the first 4,096 bytes end
// exactly between two requests, or 200 bytes into the second). Every
// answer must be the right one (the echo's length and SHA-256, the
// request's path): no byte lost, none read twice, no request failed or
// retried, and the HTTP/1 connections migrate.
func TestHTTPBoundaries(t *testing.T) {
	const takeovers = 3
	restartCheckLeaks(t)
	dir := t.TempDir()
	g := startHTTPGens(t, httpGenEnv(dir, 5*time.Second))
	l := newLoad()
	defer l.halt()
	id := 0
	next := func() int { id++; return id - 1 }
	for _, total := range []int{4096, 8192} {
		l.h1Exchanges(g.addr, next(), func(c net.Conn, r *bufio.Reader) (string, error) {
			return echoExactly(c, r, total)
		})
	}
	for _, past := range []int{0, 200} {
		l.h1Exchanges(g.addr, next(), func(c net.Conn, r *bufio.Reader) (string, error) {
			return pipelinedAt4K(c, r, past)
		})
	}
	h2 := next()
	l.h2DataFrames(h2cTransport(), "http://"+g.addr+"/echo", h2)
	clients := id
	l.allAt(t, clients, 1)
	for range takeovers {
		before := l.window()
		prev, _ := g.takeover()
		prev.expect(fmt.Sprintf("drained gen=%d", g.gen-1))
		prev.mustExit()
		l.allAt(t, clients, g.gen)
		st := l.window()
		t.Logf("takeover to gen %d: %v", g.gen, st)
		if m := st.migrated - before.migrated; m < int64(clients-1) {
			t.Errorf("takeover to gen %d: %d HTTP/1 connections migrated, want %d", g.gen, m, clients-1)
		}
	}
	st := l.halt()
	t.Logf("in all: %v", st)
	if st.failed != 0 {
		t.Errorf("%d requests failed: %q", st.failed, st.errs)
	}
}

// h1Exchanges starts a strict HTTP/1.1 keep-alive client at addr (see
// h1Client), numbered id, that runs exchange again and again on one
// connection; exchange returns the generation that answered, with " close"
// after it when the answer closes the connection.
func (l *load) h1Exchanges(addr string, id int, exchange func(net.Conn, *bufio.Reader) (string, error)) {
	dial := func() (net.Conn, error) { return net.Dial("tcp", addr) }
	l.h1Client(id, dial, time.Millisecond, func(c net.Conn, r *bufio.Reader) (string, bool, error) {
		gen, err := exchange(c, r)
		return strings.TrimSuffix(gen, " close"), strings.HasSuffix(gen, " close"), err
	})
}

// echoRequest returns a POST /echo of exactly total bytes, headers
// included, and the answer it expects.
func echoRequest(total int, fill byte) (req []byte, want string) {
	for n := total; n > 0; n-- {
		head := fmt.Sprintf("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n", n)
		if len(head)+n == total {
			body := bytes.Repeat([]byte{fill}, n)
			sum := sha256.Sum256(body)
			return append([]byte(head), body...), fmt.Sprintf("%d %s", n, hex.EncodeToString(sum[:]))
		}
	}
	panic("no request of that size")
}

// readAnswer reads one response and checks its body; it returns the
// generation that gave it, with " close" if it closes the connection.
func readAnswer(r *bufio.Reader, want string) (string, error) {
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", err
	}
	gen := resp.Header.Get("X-Gen")
	if resp.StatusCode != http.StatusOK || gen == "" {
		return "", fmt.Errorf("status %d, X-Gen %q", resp.StatusCode, gen)
	}
	if want != "" && string(b) != want {
		return "", fmt.Errorf("answer %q, want %q", b, want)
	}
	if resp.Close {
		gen += " close"
	}
	return gen, nil
}

// echoExactly sends a request of total bytes, headers and body, and checks
// the echo.
func echoExactly(c net.Conn, r *bufio.Reader, total int) (string, error) {
	req, want := echoRequest(total, 'b')
	if _, err := c.Write(req); err != nil {
		return "", err
	}
	return readAnswer(r, want)
}

// pipelinedAt4K sends, in one write, an echo request, a GET of / whose
// end is past bytes after the first 4,096, and another GET, and checks
// the three answers.
func pipelinedAt4K(c net.Conn, r *bufio.Reader, past int) (string, error) {
	const first = 3000
	echo, want := echoRequest(first, 'p')
	get := func(size int) []byte {
		head := "GET / HTTP/1.1\r\nHost: test\r\nX-Pad: "
		return []byte(head + strings.Repeat("x", size-len(head)-4) + "\r\n\r\n")
	}
	b := append(echo, get(4096+past-first)...)
	if len(b) != 4096+past {
		panic("pipelined requests of the wrong size")
	}
	b = append(b, get(100)...)
	if _, err := c.Write(b); err != nil {
		return "", err
	}
	gen, err := readAnswer(r, want)
	for range 2 {
		if err != nil || strings.HasSuffix(gen, " close") {
			break
		}
		gen, err = readAnswer(r, "")
	}
	return gen, err
}

// h2DataFrames starts a client on Go's transport tr, numbered id, that
// posts bodies of four 4,096-byte DATA frames to url (/echo) and checks
// the echo; a request written twice fails.
func (l *load) h2DataFrames(tr *http.Transport, url string, id int) {
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	body := make([]byte, 4*4096)
	for i := range body {
		body[i] = byte(i)
	}
	sum := sha256.Sum256(body)
	want := strconv.Itoa(len(body)) + " " + hex.EncodeToString(sum[:])
	l.wg.Go(func() {
		defer tr.CloseIdleConnections()
		for !l.stopped() {
			var conns, wrote atomic.Int32
			trace := &httptrace.ClientTrace{
				GotConn:      func(httptrace.GotConnInfo) { conns.Add(1) },
				WroteHeaders: func() { wrote.Add(1) },
			}
			ctx := httptrace.WithClientTrace(context.Background(), trace)
			req, err := http.NewRequestWithContext(ctx, "POST", url, &chunks{b: body, n: 4096})
			if err != nil {
				panic(err)
			}
			req.ContentLength = int64(len(body))
			// The transport may take a connection that has just heard
			// GOAWAY, give up on it before it writes anything (closing
			// the body) and take another: it needs the body again. A
			// request it wrote twice still fails below.
			req.GetBody = func() (io.ReadCloser, error) {
				return io.NopCloser(&chunks{b: body, n: 4096}), nil
			}
			start := time.Now()
			resp, err := client.Do(req)
			var got []byte
			if err == nil {
				got, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil && (resp.StatusCode != http.StatusOK || string(got) != want) {
					err = fmt.Errorf("status %d, answer %q, want %q", resp.StatusCode, got, want)
				}
			}
			if err == nil && wrote.Load() > 1 {
				l.mu.Lock()
				l.st.retried++
				l.mu.Unlock()
				err = fmt.Errorf("sent %d times", wrote.Load())
			} else if err == nil && conns.Load() > 1 {
				l.mu.Lock()
				l.st.repicked++
				l.mu.Unlock()
			}
			if err != nil {
				l.fail(fmt.Errorf("client %d: %w", id, err))
				time.Sleep(10 * time.Millisecond)
				continue
			}
			l.done(id, resp.Header.Get("X-Gen"), time.Since(start))
			time.Sleep(time.Millisecond)
		}
	})
}

// chunks reads b n bytes at a time: Go's HTTP/2 transport writes each
// read as a DATA frame of its own.
type chunks struct {
	b []byte
	n int
}

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.b)
	c.b = c.b[k:]
	return k, nil
}

//go:build linux

package fuzz_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/internal/handoffmsg"
)

// Configuration bits of FuzzHTTPAdopt (cfg[0]).
const (
	httpServeFirst = 1 << iota // HTTPServer.Serve before Ready, rather than after
	httpStream                 // FeatureStreamConns: the connections come in two batches
)

// httpState is the state graceful's HTTPServer tags its connections with
// (HANDOFF.md).
const httpState = "net/http"

// FuzzHTTPAdopt runs a successor with an HTTPServer (graceful.New,
// Process.HTTP, Listen, Serve, Ready) against a fake predecessor that
// hands over, in a migration, real TCP connections with fuzzed state and
// unread bytes: each tagged net/http or not, labelled with a network
// that fits or not. conns is read by readHTTPConns; cfg[0] holds the
// http* bits.
//
// Invariants: no panic; Ready succeeds exactly when every connection is
// labelled with a TCP network and none tagged net/http comes with unread
// bytes (HANDOFF.md); then each connection tagged net/http is served by
// the HTTPServer (a request on it gets its answer), and the others come
// from MigratedConns, in order, with their state, and their unread bytes
// first when read; the successor says HELLO, READY and ADOPTED with the
// number of connections, and no more (when it refuses them, HELLO and
// READY, then what it likes); and once the server is drained and the Process closed, the
// open-descriptor count is where it was.
func FuzzHTTPAdopt(f *testing.F) {
	addScripts(f, httpAdoptSeeds())
	f.Fuzz(scripted(httpAdoptRun))
}

// httpConn is one connection a fuzzed migration brings.
type httpConn struct {
	network         string
	state, buffered []byte
}

// httpNetworks are the labels a connection may have.
var httpNetworks = []string{"tcp", "tcp4", "tcp6", "unix"}

// readHTTPConns reads up to four connections: a flags byte each (bit 0
// tagged net/http; bits 1-2 the network, httpNetworks), then, unless
// tagged, the state (a length byte, mod 16, and the bytes), then the
// unread bytes (a length byte, mod 32, and the bytes).
func readHTTPConns(b []byte) []httpConn {
	r := reader{b}
	var cs []httpConn
	for len(r.b) > 0 && len(cs) < 4 {
		fl := r.byte()
		c := httpConn{network: httpNetworks[fl>>1&3], state: []byte(httpState)}
		if fl&1 == 0 {
			c.state = bytes.Clone(r.bytes(int(r.byte() % 16)))
		}
		c.buffered = bytes.Clone(r.bytes(int(r.byte() % 32)))
		cs = append(cs, c)
	}
	return cs
}

func httpAdoptRun(socks *sockets, connBytes []byte, cfg byte) (err error) {
	conns := readHTTPConns(connBytes)
	wantOK := true
	for _, c := range conns {
		if c.network == "unix" || string(c.state) == httpState && len(c.buffered) > 0 {
			wantOK = false
		}
	}

	// The connections: the fake predecessor's ends are sent, the
	// clients' stay here.
	var clients, servers []net.Conn
	defer func() {
		for _, c := range append(clients, servers...) {
			c.Close()
		}
	}()
	var items []migItem
	for _, c := range conns {
		client, server, err := tcpPair(socks.tcpLn)
		if err != nil {
			return err
		}
		clients, servers = append(clients, client), append(servers, server)
		items = append(items, migItem{v: server, network: c.network, state: c.state, buffered: c.buffered,
			payload: handoffmsg.AppendConnPayload(nil, c.state, c.buffered)})
	}
	features := uint32(handoffmsg.FeatureMigrate)
	var batches [][]migItem
	if cfg&httpStream != 0 {
		features |= handoffmsg.FeatureStreamConns
		half := len(items) / 2
		batches = [][]migItem{items[:half], items[half:]}
	} else {
		batches = [][]migItem{items}
	}
	steps := []succStep{{kind: stepOffer, version: 1, features: features, announced: 1, offerItems: []byte{offerOwnHandoff}}}
	for i, b := range batches {
		total := uint32(len(items))
		if i < len(batches)-1 {
			total = handoffmsg.ConnsMore
		}
		steps = append(steps, succStep{kind: stepConns, msg: migMsg{items: b,
			payload: rawMessage(handoffmsg.MsgConns, le32(uint32(len(b))), le32(total))}})
	}
	done, _ := handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgDone, Features: features})
	steps = append(steps, succStep{kind: stepDone, msg: migMsg{payload: done}})

	path := fmt.Sprintf("@fdpass-fuzz-http-%d-%d", os.Getpid(), successorCount.Add(1))
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return err
	}
	heard := make(chan fakeResult, 1)
	go func() { heard <- fakePredecessor(ln, socks, steps, false) }()
	// What the successor said, heard once it has closed (deferred
	// before Close).
	var readyErr error
	defer func() {
		fr := <-heard
		switch {
		case err != nil:
		case fr.err != nil:
			err = fmt.Errorf("the fake predecessor: %v", fr.err)
		default:
			err = checkSuccessorSaid(fr.said, succOutcome{newOK: true, inherited: true, readyOK: wantOK,
				features: features, migrate: true, conns: len(conns)}, nil, readyErr, len(conns))
		}
	}()

	p, err := graceful.New(graceful.Options{Path: path, Timeout: 5 * time.Second, Migrate: true})
	if err != nil {
		return fmt.Errorf("New: %v", err)
	}
	defer p.Close()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok "+r.URL.Path)
	})}
	hs := p.HTTP(srv)
	hln, err := p.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("Listen: %v", err)
	}
	served := make(chan error, 1)
	serve := func() { served <- hs.Serve(hln) }
	if cfg&httpServeFirst != 0 {
		go serve()
	}
	readyErr = p.Ready()
	if cfg&httpServeFirst == 0 {
		go serve()
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Drain(ctx)
		<-served
	}()
	// The predecessor's copies go once DONE is through (or not).
	for _, c := range servers {
		c.Close()
	}
	servers = nil
	switch {
	case readyErr == nil && !wantOK:
		return fmt.Errorf("Ready accepted %+v", conns)
	case readyErr != nil && wantOK:
		return fmt.Errorf("Ready: %v, for %+v", readyErr, conns)
	case readyErr != nil:
		if !errors.Is(readyErr, graceful.ErrHandoff) || !errors.Is(readyErr, graceful.ErrMalformed) {
			return fmt.Errorf("Ready: error %q does not match ErrHandoff and ErrMalformed", readyErr)
		}
		return nil
	}

	migrated, err := p.MigratedConns()
	if err != nil {
		return fmt.Errorf("MigratedConns: %v", err)
	}
	defer func() {
		for _, c := range migrated {
			c.Close()
		}
	}()
	k := 0
	for i, c := range conns {
		client := clients[i]
		client.SetDeadline(time.Now().Add(5 * time.Second))
		if string(c.state) == httpState {
			if err := httpExchange(client, fmt.Sprintf("/c%d", i)); err != nil {
				return fmt.Errorf("connection %d, tagged %s: %v", i, httpState, err)
			}
			continue
		}
		if k >= len(migrated) {
			return fmt.Errorf("connection %d (state %q) is not among the %d MigratedConns returned", i, c.state, len(migrated))
		}
		mc := migrated[k]
		k++
		if !bytes.Equal(mc.State(), c.state) || mc.Buffered() != len(c.buffered) {
			return fmt.Errorf("connection %d: state %q and %d unread bytes, want %q and %q", i, mc.State(), mc.Buffered(), c.state, c.buffered)
		}
		// What came with it, then what the client sends now.
		if _, err := io.WriteString(client, "!"); err != nil {
			return err
		}
		want := append(bytes.Clone(c.buffered), '!')
		got := make([]byte, len(want))
		mc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(mc, got); err != nil || !bytes.Equal(got, want) {
			return fmt.Errorf("connection %d: read %q, %v; want %q", i, got, err, want)
		}
	}
	if k != len(migrated) {
		return fmt.Errorf("%d MigratedConns, %d connections not tagged %s", len(migrated), k, httpState)
	}
	for _, c := range clients {
		c.Close()
	}
	clients = nil
	return nil
}

// httpExchange sends a request for path on c and reads its answer.
func httpExchange(c net.Conn, path string) error {
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: fuzz\r\n\r\n", path); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || string(body) != "ok "+path {
		return fmt.Errorf("answer %s %q", resp.Status, body)
	}
	return nil
}

var _ = addScriptSeeds("FuzzHTTPAdopt", httpAdoptSeeds)

func httpAdoptSeeds() []scriptSeed {
	const (
		tagged = 1
		tcp4   = 1 << 1
		tcp6   = 2 << 1
		unixL  = 3 << 1
	)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	idle := []byte{tagged, 0}
	other := func(fl byte, state, unread string) []byte {
		b := append([]byte{fl, byte(len(state))}, state...)
		return append(append(b, byte(len(unread))), unread...)
	}
	return []scriptSeed{
		{name: "idle-http", script: idle, add: true},
		{name: "idle-http-served-first", script: cat(idle, idle), cfg: []byte{httpServeFirst}},
		{name: "http-and-chat", script: cat(idle, other(0, "3 ada", "NICK b\n"), idle, other(tcp4, "", "")), cfg: []byte{httpStream}, add: true},
		{name: "http-with-unread", script: cat(idle, []byte{tagged, 5}, []byte("GET /")), add: true},
		{name: "http-state-prefix", script: other(0, "net/htt", "")},
		{name: "http-state-longer", script: other(0, "net/http2", "x")},
		{name: "http-tcp6-label", script: []byte{tagged | tcp6, 0}},
		{name: "http-unix-label", script: []byte{tagged | unixL, 0}},
		{name: "other-unread-only", script: other(0, "", strings.Repeat("u", 31))},
		{name: "none", script: nil},
		{name: "none-streamed", script: nil, cfg: []byte{httpStream | httpServeFirst}},
	}
}

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
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/unixmsg"
)

// Configuration bits of FuzzHandoffPredecessor (cfg[0]).
const (
	predMigrate = 1 << iota // Options.Migrate, and a tracked connection
	predStall               // after the last step the fake holds on, silent, until the predecessor hangs up
)

// FuzzHandoffPredecessor runs a predecessor (graceful.New, Listen, Ready,
// in this process, with a tracked connection whose reader hands it off at
// a line boundary) and lets a fake successor speak to it: a fuzzed
// sequence of HELLO, READY, ADOPTED, any message, raw payloads (with a
// descriptor or not), ERROR, bytes that are not unixmsg frames, and reads
// of what the predecessor sends (acknowledged as unixmsg does). script is
// read by readPredecessorScript; cfg[0] holds the pred* bits. The fake
// hangs up at the end; then a real successor (graceful.New and Ready in
// this process) takes over.
//
// Invariants: no panic; the predecessor hands over to the fake exactly
// when the fake received DONE (and so acknowledged it), within
// Options.Timeout; what it sends follows HANDOFF.md (an OFFER only to a
// HELLO that came first and allows version 1, with the features both
// support, the descriptors it announces and generation 1; CONNS only
// after a READY that asked for the migration both sides support; DONE
// only after READY and, with a migration, ADOPTED with the number of
// connections sent, naming the phase that took place); when the fake did
// not take over, the predecessor serves on: the real successor inherits
// from it and takes over within Options.Timeout, and the tracked
// connection answers still (else it went to the fake); and once both
// Processes are closed, the open-descriptor count is where it was.
func FuzzHandoffPredecessor(f *testing.F) {
	addScripts(f, predecessorSeeds())
	f.Fuzz(scripted(predecessorRun))
}

// Kinds of step of a fake successor's script.
const (
	pstepHello   = iota // HELLO
	pstepReady          // READY
	pstepAdopted        // ADOPTED
	pstepMessage        // any control message
	pstepRaw            // a batch with any payload
	pstepError          // ERROR
	pstepHear           // receive one batch
	pstepGarbage        // bytes that are not a unixmsg frame
)

type predStep struct {
	kind    int
	payload []byte // the control message, for the steps that send one
	attach  bool   // a descriptor comes with it
	right   bool   // ADOPTED: the number of connections heard so far
	raw     []byte // pstepGarbage
}

// readPredecessorScript reads the steps of a fake successor. Each starts
// with an op byte whose low three bits are the kind of step and whose
// bit 7 attaches a TCP connection to the batch of a step that sends one:
//
//	pstepHello: a byte whose bits 0-1 pick the version range (1-1, 2-3,
//	  1-5, 0-1 unchecked) and a features byte.
//	pstepReady: a features byte.
//	pstepAdopted: a byte; 0xff stands for the number of connections heard
//	  so far.
//	pstepMessage: type, Items and Total bytes, as readMigration's op 1.
//	pstepRaw: a length byte and the payload.
//	pstepError: a code byte.
//	pstepHear: nothing.
//	pstepGarbage: a length byte and the bytes, after a '!'.
func readPredecessorScript(script []byte) []predStep {
	r := reader{script}
	var steps []predStep
	for len(r.b) > 0 && len(steps) < 24 {
		op := r.byte()
		st := predStep{kind: int(op & 7), attach: op&0x80 != 0}
		switch st.kind {
		case pstepHello:
			v := r.byte() & 3
			feat := uint32(r.byte())
			lo, hi := [...]uint16{1, 2, 1, 0}[v], [...]uint16{1, 3, 5, 1}[v]
			st.payload = rawMessage(handoffmsg.MsgHello, le16(lo), le16(hi), le32(feat))
		case pstepReady:
			st.payload, _ = handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgReady, Features: uint32(r.byte())})
		case pstepAdopted:
			n := r.byte()
			st.right = n == 0xff
			st.payload, _ = handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgAdopted, Items: uint32(n)})
		case pstepMessage:
			typ := handoffmsg.MessageType(r.byte())
			msg := handoffmsg.Message{Type: typ, Items: uint32(r.byte()), Total: uint32(r.byte()),
				MinVersion: 1, MaxVersion: 1, Version: 1, Code: 1, PID: 1}
			if msg.Items > msg.Total {
				msg.Items, msg.Total = msg.Total, msg.Items
			}
			if b, err := handoffmsg.Append(nil, msg); err == nil {
				st.payload = b
			} else {
				st.payload = rawMessage(typ)
			}
		case pstepRaw:
			st.payload = bytes.Clone(r.bytes(int(r.byte())))
		case pstepError:
			code := handoffmsg.ErrorCode(r.byte())
			if code == 0 {
				code = handoffmsg.CodeAborted
			}
			st.payload, _ = handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgError, Code: code, Reason: "fuzz"})
		case pstepGarbage:
			st.raw = append([]byte{'!'}, r.bytes(int(r.byte()))...)
		}
		steps = append(steps, st)
	}
	return steps
}

// predecessorCount numbers the runs of this process, for their socket
// names.
var predecessorCount atomic.Int64

// errNoSuccessor is what Options.Successor returns here: an UPGRADE
// request must not start this test binary again.
var errNoSuccessor = errors.New("fuzz: no successor to start")

func predecessorRun(socks *sockets, script []byte, cfg byte) error {
	steps := readPredecessorScript(script)
	path := fmt.Sprintf("@fdpass-fuzz-predecessor-%d-%d", os.Getpid(), predecessorCount.Add(1))
	timeout := 5 * time.Second
	stall := cfg&predStall != 0
	if stall {
		// The fake stalls: a short timeout, and none of the rest of
		// the run waits for it.
		timeout = time.Second
	}
	migrating := cfg&predMigrate != 0
	opts := graceful.Options{Path: path, Timeout: timeout, Migrate: migrating, QuiesceTimeout: time.Second,
		Successor: func() (*exec.Cmd, error) { return nil, errNoSuccessor }}
	p1, err := graceful.New(opts)
	if err != nil {
		return fmt.Errorf("predecessor: New: %v", err)
	}
	defer p1.Close()
	ln, err := p1.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("predecessor: Listen: %v", err)
	}
	defer ln.Close()
	var client net.Conn
	if migrating {
		var server net.Conn
		if client, server, err = tcpPair(ln); err != nil {
			return err
		}
		defer client.Close()
		go echoLines(p1.Track(server))
	}
	if err := p1.Ready(); err != nil {
		return fmt.Errorf("predecessor: Ready: %v", err)
	}

	tr, err := fakeSuccessor(path, socks, steps, stall, timeout)
	if err != nil {
		return fmt.Errorf("fake successor: %v", err)
	}
	if err := checkPredecessorSaid(tr, migrating, p1.Generation()); err != nil {
		return err
	}
	switch {
	case !tr.gotDone && p1.HandedOff():
		return fmt.Errorf("the predecessor handed over to a successor that did not acknowledge DONE")
	case tr.gotDone && !tr.stray:
		select {
		case <-p1.Exit():
		case <-time.After(timeout + 2*time.Second):
			return fmt.Errorf("the fake successor acknowledged DONE; the predecessor did not hand over within %v", timeout)
		}
	}

	// The real successor. Its turn comes once the fake's handoff is
	// over: it inherits unless the fake took over.
	start := time.Now()
	p2, err := graceful.New(graceful.Options{Path: path, Timeout: timeout, Successor: opts.Successor})
	if err != nil {
		return fmt.Errorf("successor after the fake: New: %v", err)
	}
	defer p2.Close()
	if err := p2.Ready(); err != nil {
		return fmt.Errorf("successor after the fake: Ready: %v", err)
	}
	if took := time.Since(start); took > timeout+2*time.Second {
		return fmt.Errorf("the successor after the fake took %v", took)
	}
	fakeTook := !p2.Inherited()
	if fakeTook && !tr.gotDone || !fakeTook && tr.gotDone && !tr.stray {
		return fmt.Errorf("the successor after the fake inherited: %v; the fake acknowledged DONE: %v", p2.Inherited(), tr.gotDone)
	}
	if p2.Inherited() {
		select {
		case <-p1.Exit():
		case <-time.After(timeout + 2*time.Second):
			return fmt.Errorf("the predecessor did not stop for the real successor")
		}
	}
	if client != nil {
		// The tracked connection went to the fake only if it took
		// over with it; else its reader serves it still.
		gone := fakeTook && tr.conns > 0
		client.SetDeadline(time.Now().Add(timeout))
		_, werr := io.WriteString(client, "ping\n")
		line, rerr := bufio.NewReader(client).ReadString('\n')
		switch {
		case gone && rerr == nil:
			return fmt.Errorf("the connection the fake took still answers %q", line)
		case !gone && (werr != nil || rerr != nil || line != "ping\n"):
			return fmt.Errorf("the tracked connection does not answer after the fake: %q, %v, %v", line, werr, rerr)
		}
	}
	return nil
}

// tcpPair returns a client connection to ln and its accepted end.
func tcpPair(ln net.Listener) (net.Conn, net.Conn, error) {
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	server, err := ln.Accept()
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	return client, server, nil
}

// echoLines answers each line read from c with itself, handing c off at a
// line boundary.
func echoLines(c *graceful.Conn) {
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if errors.Is(err, graceful.ErrMigrating) {
			if c.HandoffReader([]byte("echo"), r, []byte(line)) {
				return
			}
			continue
		}
		if err != nil {
			c.Close()
			return
		}
		if _, err := io.WriteString(c, line); err != nil {
			c.Close()
			return
		}
	}
}

// event is one thing a fake successor sent or heard.
type event struct {
	heard bool
	m     handoffmsg.Message
	items int // heard: the descriptors that came with it
	bad   string
}

// transcript is what happened between a fake successor and the
// predecessor.
type transcript struct {
	events  []event
	gotDone bool // the fake received DONE, and so acknowledged it
	conns   int  // connections the fake received in CONNS batches
	// The fake sent something after READY that HANDOFF.md does not have
	// a successor send (anything but one ADOPTED, after one CAPACITY if
	// its READY asked for FeatureCapacity, offered): the predecessor may
	// read it where it waits for DONE's acknowledgement, and roll back
	// while the fake acknowledges DONE. A successor that breaks the
	// protocol so is not protected from serving beside its predecessor.
	stray bool
}

// hangUpBound bounds how long a predecessor takes to hang up on a fake
// that stalled, with Options.Timeout timeout: the wait for the first
// message (2 s), or the handoff's, then the second it gives a refused
// peer to read the ERROR, and a little.
func hangUpBound(timeout time.Duration) time.Duration {
	return max(2*time.Second, timeout) + time.Second + 2*time.Second
}

// fakeSuccessor dials path and plays steps, then hangs up; with stall it
// waits for the predecessor to hang up first, and fails if it does not
// within hangUpBound.
func fakeSuccessor(path string, socks *sockets, steps []predStep, stall bool, timeout time.Duration) (*transcript, error) {
	tr := &transcript{}
	ready, adopted := false, false
	// CAPACITY is due after READY (wantCap), and was sent (sentCap).
	wantCap, sentCap := false, false
	offered := uint32(0)
	c, err := unixmsg.Dial("unixpacket", path, &unixmsg.Options{NoAck: true})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	for _, st := range steps {
		c.SetDeadline(time.Now().Add(time.Second))
		switch st.kind {
		case pstepHear:
			c.SetDeadline(time.Now().Add(200 * time.Millisecond))
			b, err := c.Receive()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// Nothing came: on to the next step.
				break
			}
			if err != nil {
				return tr, nil
			}
			ev := event{heard: true, items: b.Len()}
			m, perr := handoffmsg.Parse(b.Payload())
			if perr != nil {
				ev.bad = perr.Error()
			}
			ev.m = m
			if m.Type == handoffmsg.MsgConns {
				tr.conns += b.Len()
			}
			if m.Type == handoffmsg.MsgOffer {
				offered = m.Features
			}
			b.Close()
			tr.events = append(tr.events, ev)
			if m.Type == handoffmsg.MsgDone {
				tr.gotDone = true
			}
		case pstepGarbage:
			tr.stray = tr.stray || ready
			if _, err := c.UnixConn().Write(st.raw); err != nil {
				return tr, nil
			}
		default:
			payload := st.payload
			if st.right {
				payload, _ = handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgAdopted, Items: uint32(tr.conns)})
			}
			var b unixmsg.Batch
			if st.attach {
				if err := b.Add("0", socks.tcpConn, nil, nil); err != nil {
					return nil, err
				}
			}
			b.SetPayload(payload)
			err := c.SendNoAck(context.Background(), &b)
			b.Close()
			if err != nil {
				return tr, nil
			}
			m, _ := handoffmsg.Parse(payload)
			tr.events = append(tr.events, event{m: m, items: b.Len()})
			const capMig = handoffmsg.FeatureMigrate | handoffmsg.FeatureCapacity
			switch {
			case !ready:
				ready = m.Type == handoffmsg.MsgReady
				wantCap = ready && m.Features&offered&capMig == capMig
			case m.Type == handoffmsg.MsgCapacity && wantCap && !sentCap:
				sentCap = true
			case m.Type == handoffmsg.MsgAdopted && !adopted && wantCap == sentCap:
				adopted = true
			default:
				tr.stray = true
			}
		}
		if tr.gotDone {
			// The handoff is over.
			break
		}
	}
	if stall && !tr.gotDone {
		start := time.Now()
		c.UnixConn().SetDeadline(start.Add(hangUpBound(timeout)))
		buf := make([]byte, 4<<10)
		for {
			// No control buffer: the kernel closes what comes.
			if _, err := c.UnixConn().Read(buf); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					return nil, fmt.Errorf("the predecessor held a stalled successor for %v", time.Since(start))
				}
				break
			}
		}
	}
	return tr, nil
}

// checkPredecessorSaid checks what the predecessor sent the fake against
// what the fake had sent before.
func checkPredecessorSaid(tr *transcript, migrating bool, gen uint64) error {
	var ours uint32
	if migrating {
		ours = handoffmsg.FeatureMigrate | handoffmsg.FeatureStreamConns | handoffmsg.FeatureLateConns | handoffmsg.FeatureCapacity
	}
	var hello, ready, done *handoffmsg.Message
	var first *event
	adopted := -1
	var offered *handoffmsg.Message
	for i := range tr.events {
		ev := &tr.events[i]
		if !ev.heard {
			if first == nil {
				first = ev
			}
			switch {
			case ev.m.Type == handoffmsg.MsgHello && first == ev:
				hello = &ev.m
			case ev.m.Type == handoffmsg.MsgReady && ready == nil:
				ready = &ev.m
			case ev.m.Type == handoffmsg.MsgAdopted && adopted < 0:
				adopted = int(ev.m.Items)
			}
			continue
		}
		if ev.bad != "" {
			return fmt.Errorf("the predecessor sent a message that does not parse: %s", ev.bad)
		}
		m := ev.m
		switch m.Type {
		case handoffmsg.MsgError:
		case handoffmsg.MsgOffer:
			switch {
			case hello == nil:
				return fmt.Errorf("OFFER without a HELLO first")
			case hello.MinVersion > 1 || hello.MaxVersion < 1 || hello.MinVersion == 0:
				return fmt.Errorf("OFFER to a HELLO of versions %d-%d", hello.MinVersion, hello.MaxVersion)
			case offered != nil:
				return fmt.Errorf("a second OFFER")
			case m.Version != 1 || m.Features != hello.Features&ours || int(m.Items) != ev.items || m.Generation != gen:
				return fmt.Errorf("OFFER %+v with %d descriptors to HELLO %+v (ours %#x, generation %d)", m, ev.items, *hello, ours, gen)
			}
			offered = &ev.m
		case handoffmsg.MsgConns:
			if offered == nil || ready == nil || ready.Features&offered.Features&handoffmsg.FeatureMigrate == 0 {
				return fmt.Errorf("CONNS without a READY that asked for migration (OFFER %v, READY %v)", offered, ready)
			}
		case handoffmsg.MsgDone:
			if offered == nil || ready == nil {
				return fmt.Errorf("DONE without OFFER and READY")
			}
			both := ready.Features & offered.Features
			if both&handoffmsg.FeatureMigrate == 0 {
				both = 0
			}
			if both&handoffmsg.FeatureStreamConns == 0 {
				both &^= handoffmsg.FeatureLateConns
			}
			// CAPACITY is asked for in READY, not named in DONE.
			both &^= handoffmsg.FeatureCapacity
			if both != 0 && adopted != tr.conns {
				return fmt.Errorf("DONE after ADOPTED %d, %d connections sent", adopted, tr.conns)
			}
			if m.Features != both {
				return fmt.Errorf("DONE with features %#x; READY %#x, OFFER %#x", m.Features, ready.Features, offered.Features)
			}
			done = &ev.m
		case handoffmsg.MsgLate:
			if done == nil || done.Features&handoffmsg.FeatureLateConns == 0 {
				return fmt.Errorf("LATE without a DONE that agreed to late connections (DONE %v)", done)
			}
		default:
			return fmt.Errorf("the predecessor sent %s", m.Type)
		}
	}
	return nil
}

var _ = addScriptSeeds("FuzzHandoffPredecessor", predecessorSeeds)

func predecessorSeeds() []scriptSeed {
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	mig := byte(handoffmsg.FeatureMigrate | handoffmsg.FeatureStreamConns)
	hello := []byte{pstepHello, 0, 0}
	helloMig := []byte{pstepHello, 0, mig}
	hear := []byte{pstepHear}
	ready := []byte{pstepReady, 0}
	readyMig := []byte{pstepReady, mig}
	adopted := []byte{pstepAdopted, 0xff}
	return []scriptSeed{
		{name: "handoff", script: cat(hello, hear, ready, hear), add: true},
		{name: "migration", script: cat(helloMig, hear, readyMig, hear, hear, adopted, hear), cfg: []byte{predMigrate}, add: true},
		{name: "migration-capacity", script: cat([]byte{pstepHello, 0, mig | handoffmsg.FeatureCapacity}, hear, []byte{pstepReady, mig | handoffmsg.FeatureCapacity},
			[]byte{pstepMessage, byte(handoffmsg.MsgCapacity), 1, 1}, hear, hear, adopted, hear), cfg: []byte{predMigrate}, add: true},
		{name: "migration-capacity-missing", script: cat([]byte{pstepHello, 0, mig | handoffmsg.FeatureCapacity}, hear, []byte{pstepReady, mig | handoffmsg.FeatureCapacity},
			hear, adopted, hear), cfg: []byte{predMigrate}},
		{name: "migration-not-streamed", script: cat([]byte{pstepHello, 0, 1}, hear, []byte{pstepReady, 1}, hear, adopted, hear), cfg: []byte{predMigrate}},
		{name: "migration-declined", script: cat(helloMig, hear, ready, hear), cfg: []byte{predMigrate}},
		{name: "migration-adopted-wrong", script: cat(helloMig, hear, readyMig, hear, hear, []byte{pstepAdopted, 7}, hear), cfg: []byte{predMigrate}},
		{name: "migration-error", script: cat(helloMig, hear, readyMig, hear, []byte{pstepError, byte(handoffmsg.CodeAborted)}, hear), cfg: []byte{predMigrate}},
		{name: "migration-hang-up", script: cat(helloMig, hear, readyMig, hear), cfg: []byte{predMigrate}},
		{name: "migration-ready-twice", script: cat(helloMig, hear, readyMig, readyMig, hear, hear), cfg: []byte{predMigrate}},
		{name: "no-ready", script: cat(hello, hear)},
		{name: "ready-unread-offer", script: cat(hello, ready, hear, hear)},
		{name: "hello-twice", script: cat(hello, hello, hear, hear)},
		{name: "hello-version-2", script: cat([]byte{pstepHello, 1, 0}, hear)},
		{name: "hello-version-1-to-5", script: cat([]byte{pstepHello, 2, 0}, hear, ready, hear)},
		{name: "hello-version-0", script: cat([]byte{pstepHello, 3, 0}, hear)},
		{name: "hello-with-descriptor", script: cat([]byte{pstepHello | 0x80, 0, 0}, hear, ready, hear)},
		{name: "ready-with-descriptor", script: cat(hello, hear, []byte{pstepReady | 0x80, 0}, hear)},
		{name: "ready-first", script: cat(ready, hear)},
		{name: "adopted-first", script: cat(adopted, hear)},
		{name: "error-first", script: cat([]byte{pstepError, byte(handoffmsg.CodeVersion)}, hear)},
		{name: "error-instead-of-ready", script: cat(hello, hear, []byte{pstepError, byte(handoffmsg.CodeInternal)}, hear)},
		{name: "upgrade-request", script: cat([]byte{pstepMessage, byte(handoffmsg.MsgUpgrade), 0, 0}, hear)},
		{name: "upgrade-after-hello", script: cat(hello, hear, []byte{pstepMessage, byte(handoffmsg.MsgUpgrade), 0, 0}, hear)},
		{name: "unknown-message", script: cat([]byte{pstepMessage, 10, 0, 0}, hear)},
		{name: "done-from-successor", script: cat(hello, hear, []byte{pstepMessage, byte(handoffmsg.MsgDone), 0, 0}, hear)},
		{name: "raw-bad-magic", script: cat([]byte{pstepRaw, 4}, []byte("FDPS"), hear)},
		{name: "raw-big", script: cat([]byte{pstepRaw, 255}, bytes.Repeat([]byte{'x'}, 255), hear)},
		{name: "garbage-first", script: cat([]byte{pstepGarbage, 14}, []byte("GET / HTTP/1.1"), hear)},
		{name: "garbage-after-offer", script: cat(hello, hear, []byte{pstepGarbage, 3}, []byte("abc"), hear)},
		{name: "silent", script: nil},
		{name: "stall-at-once", script: nil, cfg: []byte{predStall}},
		{name: "stall-after-hello", script: hello, cfg: []byte{predStall}},
		{name: "stall-after-offer", script: cat(hello, hear), cfg: []byte{predStall}},
		{name: "stall-in-migration", script: cat(helloMig, hear, readyMig, hear), cfg: []byte{predMigrate | predStall}},
		{name: "hear-only", script: cat(hear, hear)},
	}
}

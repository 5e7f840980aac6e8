//go:build linux

package fuzz_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/internal/fdtest"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/unixmsg"
	"github.com/fdpass/fdpass/unixmsg/wire"
)

// How the fake running process of FuzzRequestUpgrade answers (cfg[0] mod 4).
const (
	answerFramed = iota // answer as the payload of a unixmsg batch
	answerWithFD        // the same, with a descriptor attached
	answerRaw           // answer written to the socket as it is
	answerNone          // no answer: it hangs up
)

// FuzzRequestUpgrade runs graceful.RequestUpgrade, the requester's side of
// an UPGRADE (HANDOFF.md), against a fake running process that reads the
// request and answers with fuzzed bytes: as a message, as a message with a
// descriptor attached, as raw bytes on the socket, or not at all; then it
// hangs up.
//
// Invariants: no panic; the requester sends UPGRADE and nothing else; it
// returns once the fake hangs up, long before its context ends; it
// returns a PID exactly when the answer is a well-formed UPGRADED without
// a descriptor (then that PID); an ERROR answer gives an error matching
// ErrRefused with the peer's code and reason (and ErrUpgrade for "failed"),
// any other message type ErrMalformed, a malformed message one of the
// codec's sentinels; and the open-descriptor count is where it was.
func FuzzRequestUpgrade(f *testing.F) {
	for _, s := range requestUpgradeSeeds() {
		if s.add {
			f.Add(s.answer, s.cfg)
		}
	}
	f.Fuzz(func(t *testing.T, answer, cfg []byte) {
		var how byte
		if len(cfg) > 0 {
			how = cfg[0] % 4
		}
		before, err := fd.Count()
		if err != nil {
			t.Fatal(err)
		}
		if err := requestUpgradeRun(answer, how); err != nil {
			t.Fatalf("answer %q, how %d: %v", answer, how, err)
		}
		if err := fdtest.AwaitCount(before); err != nil {
			t.Fatalf("answer %q, how %d: %v", answer, how, err)
		}
	})
}

func requestUpgradeRun(answer []byte, how byte) error {
	path := fmt.Sprintf("@fdpass-fuzz-upgrade-%d-%d", os.Getpid(), successorCount.Add(1))
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return err
	}
	heard := make(chan error, 1)
	go func() { heard <- fakeRunning(ln, answer, how) }()

	const wait = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	start := time.Now()
	pid, err := graceful.RequestUpgrade(ctx, path)
	took := time.Since(start)
	if ferr := <-heard; ferr != nil {
		return fmt.Errorf("the fake running process: %v", ferr)
	}
	if took >= wait/2 || ctx.Err() != nil {
		return fmt.Errorf("RequestUpgrade took %v (%d, %v) with the peer gone", took, pid, err)
	}
	if err == nil && pid <= 0 {
		return fmt.Errorf("RequestUpgrade = %d, nil", pid)
	}
	if err != nil && pid != 0 {
		return fmt.Errorf("RequestUpgrade = %d, %v", pid, err)
	}

	switch how {
	case answerNone:
		if err == nil {
			return fmt.Errorf("RequestUpgrade = %d with no answer", pid)
		}
		return nil
	case answerWithFD:
		if err == nil {
			return fmt.Errorf("RequestUpgrade = %d from an answer that came with a descriptor", pid)
		}
		return nil
	case answerRaw:
		// Raw bytes are rarely a unixmsg frame; what the requester
		// makes of them is checked above only.
		return nil
	}
	m, perr := handoffmsg.Parse(answer)
	switch {
	case perr == nil && m.Type == handoffmsg.MsgUpgraded:
		if err != nil || pid != int(m.PID) {
			return fmt.Errorf("RequestUpgrade = %d, %v; the answer says UPGRADED %d", pid, err, m.PID)
		}
	case err == nil:
		return fmt.Errorf("RequestUpgrade = %d, nil from an answer that is not UPGRADED (%+v, %v)", pid, m, perr)
	case perr == nil && m.Type == handoffmsg.MsgError:
		var pe *handoffmsg.PeerError
		if !errors.Is(err, graceful.ErrRefused) || !errors.As(err, &pe) || pe.Code != m.Code || pe.Reason != m.Reason {
			return fmt.Errorf("RequestUpgrade: %v; the answer says ERROR %d %q", err, m.Code, m.Reason)
		}
		if m.Code == handoffmsg.CodeFailed && !errors.Is(err, graceful.ErrUpgrade) {
			return fmt.Errorf("RequestUpgrade: %v does not match ErrUpgrade, for ERROR %s", err, m.Code)
		}
	case perr == nil:
		if !errors.Is(err, graceful.ErrMalformed) {
			return fmt.Errorf("RequestUpgrade: %v does not match ErrMalformed, for %s", err, m.Type)
		}
	case len(answer) <= handoffmsg.MaxLen:
		if !isAny(err, handoffSentinels...) {
			return fmt.Errorf("RequestUpgrade: %v matches none of the codec's sentinels, for %q (%v)", err, answer, perr)
		}
	default:
		// Past the limits of a control message: unixmsg refuses it.
		if !errors.Is(err, wire.ErrLimit) && !isAny(err, handoffSentinels...) {
			return fmt.Errorf("RequestUpgrade: %v, for %d bytes", err, len(answer))
		}
	}
	return nil
}

// fakeRunning accepts one connection on ln, checks that its first and
// only message is UPGRADE, answers as how says, hangs up its sending side
// and waits for the requester to hang up.
func fakeRunning(ln *net.UnixListener, answer []byte, how byte) error {
	defer ln.Close()
	ln.SetDeadline(time.Now().Add(10 * time.Second))
	uc, err := ln.AcceptUnix()
	if err != nil {
		return err
	}
	ln.Close()
	h := &hearer{uc: uc}
	defer uc.Close()
	uc.SetDeadline(time.Now().Add(10 * time.Second))
	m, ok := h.next()
	if !ok || m.Type != handoffmsg.MsgUpgrade {
		return fmt.Errorf("the requester began with %+v (%v)", m, ok)
	}
	c, err := unixmsg.NewConn(uc, &unixmsg.Options{NoAck: true})
	if err != nil {
		return err
	}
	switch how {
	case answerFramed, answerWithFD:
		var b unixmsg.Batch
		if how == answerWithFD {
			r, w, err := os.Pipe()
			if err != nil {
				return err
			}
			w.Close()
			// The batch sends a copy of r.
			defer r.Close()
			if err := b.Add("fd", r, nil, nil); err != nil {
				return err
			}
		}
		b.SetPayload(answer)
		// The requester may refuse the batch and hang up first.
		c.SendNoAck(context.Background(), &b)
		b.Close()
	case answerRaw:
		uc.Write(answer)
	}
	uc.CloseWrite()
	if m, ok := h.next(); ok {
		return fmt.Errorf("the requester said %+v after UPGRADE", m)
	}
	return nil
}

type requestUpgradeSeed struct {
	name        string
	answer, cfg []byte
	add         bool
}

var _ = addSeeds(func() map[string][][]byte {
	m := map[string][][]byte{}
	for _, s := range requestUpgradeSeeds() {
		m["FuzzRequestUpgrade/"+s.name] = [][]byte{s.answer, s.cfg}
	}
	return m
})

func requestUpgradeSeeds() []requestUpgradeSeed {
	enc := func(m handoffmsg.Message) []byte {
		b, err := handoffmsg.Append(nil, m)
		if err != nil {
			panic(err)
		}
		return b
	}
	upgraded := enc(handoffmsg.Message{Type: handoffmsg.MsgUpgraded, PID: 4242})
	failed := enc(handoffmsg.Message{Type: handoffmsg.MsgError, Code: handoffmsg.CodeFailed, Reason: "exit status 3"})
	return []requestUpgradeSeed{
		{name: "upgraded", answer: upgraded, add: true},
		{name: "upgraded-pid-max", answer: enc(handoffmsg.Message{Type: handoffmsg.MsgUpgraded, PID: 0xffffffff})},
		{name: "upgraded-pid-0", answer: rawMessage(handoffmsg.MsgUpgraded, le32(0))},
		{name: "upgraded-short", answer: upgraded[:len(upgraded)-1]},
		{name: "upgraded-with-fd", answer: upgraded, cfg: []byte{answerWithFD}, add: true},
		{name: "upgraded-raw", answer: upgraded, cfg: []byte{answerRaw}},
		{name: "error-failed", answer: failed, add: true},
		{name: "error-busy", answer: enc(handoffmsg.Message{Type: handoffmsg.MsgError, Code: handoffmsg.CodeBusy, Reason: "upgrading"})},
		{name: "error-protocol", answer: enc(handoffmsg.Message{Type: handoffmsg.MsgError, Code: handoffmsg.CodeProtocol, Reason: "no"})},
		{name: "error-unknown-code", answer: enc(handoffmsg.Message{Type: handoffmsg.MsgError, Code: 999})},
		{name: "upgrade-back", answer: enc(handoffmsg.Message{Type: handoffmsg.MsgUpgrade})},
		{name: "ready", answer: enc(handoffmsg.Message{Type: handoffmsg.MsgReady})},
		{name: "empty", answer: nil},
		{name: "too-long", answer: append(upgraded, make([]byte, 2*handoffmsg.MaxLen)...)},
		{name: "hang-up", answer: nil, cfg: []byte{answerNone}, add: true},
		{name: "raw-garbage", answer: []byte("HTTP/1.1 200 OK\r\n\r\n"), cfg: []byte{answerRaw}},
	}
}

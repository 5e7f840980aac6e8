//go:build linux

package fuzz_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/graceful/migrate"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/unixmsg"
	"github.com/fdpass/fdpass/unixmsg/wire"
	"golang.org/x/sys/unix"
)

// Configuration bits of FuzzHandoffSuccessor (cfg[0]).
const (
	succMigrate = 1 << iota // Options.Migrate
	succSmall               // MaxMigrated 3, MaxMigratedBytes 48
	succListen              // Listen("tcp", "127.0.0.1:0") before Ready
)

// FuzzHandoffSuccessor runs a successor (graceful.New, Listen, Ready, in
// this process) against a fake predecessor that answers its HELLO with a
// fuzzed sequence of messages on a real handoff socket: OFFERs right and
// wrong, CONNS batches, DONE, any other message, raw payloads, ERROR,
// bytes that are not unixmsg frames, and a stall. script is read by
// readSuccessorScript; cfg[0] holds the succ* bits. The fake sends it all,
// then hangs up its sending side (at a stall: holds on), and reads what
// the successor says until it hangs up.
//
// Invariants: no panic; New and Ready each return within Options.Timeout
// and a little; New inherits exactly when the first message is an OFFER
// HANDOFF.md accepts, starts afresh (the socket is free) when the
// predecessor hung up without a word, and fails otherwise; Ready succeeds
// exactly when the messages that follow make a migration (if both sides
// asked for one, as FuzzMigrateReceive's model says, and no HTTP
// connection has unread bytes) and then DONE, with the connections of the
// migration in MigratedConns; every error matches a graceful sentinel; the
// successor says HELLO, then READY (with the features agreed), then
// CAPACITY if the OFFER offered FeatureCapacity with a migration (how many
// connections it takes: MaxMigrated, or what fits under its descriptor
// limit), then ADOPTED (with the count) and nothing else on success; and once the
// Process is closed the open-descriptor count is where it was. With a
// stall, a timeout may end either side early.
func FuzzHandoffSuccessor(f *testing.F) {
	addScripts(f, successorSeeds())
	f.Fuzz(scripted(successorRun))
}

// Kinds of step of a fake predecessor's script.
const (
	stepOffer   = iota // an OFFER batch
	stepConns          // a CONNS batch
	stepDone           // DONE
	stepMessage        // any control message
	stepRaw            // a batch with any payload
	stepError          // ERROR
	stepGarbage        // bytes that are not a unixmsg frame
	stepStall          // stop sending, hold on
)

// succStep is one step of a fake predecessor.
type succStep struct {
	kind int
	msg  migMsg // stepConns, stepDone, stepMessage, stepRaw, stepError
	raw  []byte // stepGarbage
	// stepOffer: the OFFER's fields and its items (offerItems choices)
	version    uint16
	features   uint32
	announced  uint32
	offerItems []byte
	handoffs   int  // items labelled handoff
	handoffOK  bool // the one labelled handoff is a SOCK_SEQPACKET listener
}

// OFFER item choices (low 3 bits of an item byte).
const (
	offerOwnHandoff  = iota // the predecessor's own listener, labelled handoff
	offerTCP                // a TCP listener labelled listener tcp 127.0.0.1:0
	offerUDP                // a UDP socket labelled packet udp 127.0.0.1:0
	offerFile               // /dev/null labelled file
	offerTCPHandoff         // a TCP listener labelled handoff
	offerOwnHandoff2        // the own listener again
	offerConnListen         // a TCP connection labelled listener
	offerSeqHandoff         // another SOCK_SEQPACKET listener labelled handoff
)

// readSuccessorScript reads the steps of a fake predecessor. Each starts
// with an op byte whose low three bits are the kind of step:
//
//	stepOffer: a byte of fields (bits 0-1 features: FeatureMigrate,
//	  FeatureStreamConns; bit 2 an unknown feature too; bits 3-4 the
//	  version, 1, 1, 2 or 0; bit 5 the item count is given in a byte
//	  rather than counted; bit 6 FeatureCapacity), the number of items
//	  (mod 6), an item choice byte each, then the count if given.
//	stepConns: a byte laid out as readMigration's CONNS op, then the batch
//	  as readConns reads it.
//	stepDone: a features byte.
//	stepMessage: type, Items and Total bytes (as readMigration's op 1).
//	stepRaw: a length byte and the payload.
//	stepError: a code byte.
//	stepGarbage: a length byte and the bytes, after a '!' (no frame
//	  starts so).
//	stepStall: nothing; the steps after it are never sent.
func readSuccessorScript(socks *sockets, script []byte) []succStep {
	r := reader{script}
	var steps []succStep
	sent := 0
	for len(r.b) > 0 && len(steps) < 32 {
		op := r.byte()
		st := succStep{kind: int(op & 7)}
		switch st.kind {
		case stepOffer:
			fb := r.byte()
			st.features = uint32(fb & 3)
			if fb&4 != 0 {
				st.features |= 1 << 7
			}
			if fb&0x40 != 0 {
				st.features |= handoffmsg.FeatureCapacity
			}
			st.version = [...]uint16{1, 1, 2, 0}[fb>>3&3]
			n := int(r.byte() % 6)
			st.offerItems = bytes.Clone(r.bytes(n))
			for len(st.offerItems) < n {
				st.offerItems = append(st.offerItems, 0)
			}
			st.announced = uint32(n)
			if fb&0x20 != 0 {
				st.announced = uint32(r.byte())
			}
			for _, c := range st.offerItems {
				switch c % 8 {
				case offerOwnHandoff, offerOwnHandoff2, offerSeqHandoff:
					st.handoffs++
					st.handoffOK = true
				case offerTCPHandoff:
					st.handoffs++
				}
			}
		case stepConns:
			st.msg = readConns(&r, socks, r.byte(), &sent)
		case stepDone:
			st.msg.payload, _ = handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgDone, Features: uint32(r.byte())})
		case stepMessage:
			typ := handoffmsg.MessageType(r.byte())
			msg := handoffmsg.Message{Type: typ, Items: uint32(r.byte()), Total: uint32(r.byte()),
				MinVersion: 1, MaxVersion: 1, Version: 1, Code: 1, PID: 1}
			if msg.Items > msg.Total {
				msg.Items, msg.Total = msg.Total, msg.Items
			}
			if b, err := handoffmsg.Append(nil, msg); err == nil {
				st.msg.payload = b
			} else {
				st.msg.payload = rawMessage(typ)
			}
		case stepRaw:
			st.msg.payload = bytes.Clone(r.bytes(int(r.byte())))
		case stepError:
			code := handoffmsg.ErrorCode(r.byte())
			if code == 0 {
				code = handoffmsg.CodeAborted
			}
			st.msg.payload, _ = handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgError, Code: code, Reason: "fuzz"})
		case stepGarbage:
			st.raw = append([]byte{'!'}, r.bytes(int(r.byte()))...)
		}
		steps = append(steps, st)
		if st.kind == stepStall {
			break
		}
	}
	return steps
}

// succOutcome is what the model expects of the successor.
type succOutcome struct {
	newOK     bool // New returns a Process
	inherited bool // which inherited from the fake
	fresh     bool // or started afresh
	readyOK   bool // Ready returns nil
	features  uint32
	migrate   bool // both sides agreed to migrate
	stream    bool
	capacity  bool   // and on CAPACITY: the successor says how many it takes
	most      int    // how many, if the model knows (else any from 1)
	conns     int    // migrated in
	why       string // of the failure
	stalled   bool   // a stall was reached
}

// successorModel says what HANDOFF.md has a successor do with steps.
func successorModel(steps []succStep, cfg byte) succOutcome {
	var out succOutcome
	var ours uint32
	if cfg&succMigrate != 0 {
		ours = handoffmsg.FeatureMigrate | handoffmsg.FeatureStreamConns | handoffmsg.FeatureCapacity
	}
	next := func(i int, what string) (handoffmsg.Message, bool) {
		if i >= len(steps) {
			out.why = "the predecessor hung up where " + what + " was due"
			return handoffmsg.Message{}, false
		}
		st := steps[i]
		switch st.kind {
		case stepStall:
			out.stalled = true
			out.why = "the predecessor stalled where " + what + " was due"
			return handoffmsg.Message{}, false
		case stepGarbage:
			out.why = "garbage where " + what + " was due"
			return handoffmsg.Message{}, false
		case stepOffer:
			return handoffmsg.Message{Type: handoffmsg.MsgOffer, Version: st.version, Features: st.features, Items: st.announced}, true
		}
		m, err := handoffmsg.Parse(st.msg.payload)
		if err != nil {
			out.why = fmt.Sprintf("%s where %s was due", err, what)
			return m, false
		}
		return m, true
	}
	if len(steps) == 0 {
		// Hung up without a word: the socket is free.
		out.newOK, out.fresh, out.readyOK = true, true, true
		return out
	}
	m, ok := next(0, "OFFER")
	if !ok {
		return out
	}
	st := steps[0]
	switch {
	case m.Type != handoffmsg.MsgOffer:
		out.why = fmt.Sprintf("%s where OFFER was due", m.Type)
		return out
	case st.version != 1:
		out.why = fmt.Sprintf("OFFER of version %d", st.version)
		return out
	case int(st.announced) != len(st.offerItems):
		out.why = fmt.Sprintf("OFFER announces %d items, brings %d", st.announced, len(st.offerItems))
		return out
	case st.handoffs != 1 || !st.handoffOK:
		out.why = fmt.Sprintf("OFFER with %d items labelled handoff (a SOCK_SEQPACKET listener: %v)", st.handoffs, st.handoffOK)
		return out
	}
	out.newOK, out.inherited = true, true
	both := st.features & ours
	out.migrate = both&handoffmsg.FeatureMigrate != 0
	out.stream = out.migrate && both&handoffmsg.FeatureStreamConns != 0
	if out.migrate {
		out.features = handoffmsg.FeatureMigrate
		if out.stream {
			out.features |= handoffmsg.FeatureStreamConns
		}
		// The successor takes what fits under its descriptor limit and
		// MaxMigrated: here far more than a script can send, or the
		// small MaxMigrated, which bounds the migration anyway.
		if out.capacity = both&handoffmsg.FeatureCapacity != 0; out.capacity {
			out.features |= handoffmsg.FeatureCapacity
			if cfg&succSmall != 0 {
				out.most = smallMaxConns
			}
		}
	}
	i := 1
	if out.migrate {
		var msgs []migMsg
		j := i
		for ; j < len(steps) && steps[j].kind != stepStall && steps[j].kind != stepGarbage; j++ {
			st := steps[j]
			if st.kind == stepOffer {
				// Its payload, for the model: an OFFER.
				st.msg.payload, _ = handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgOffer, Version: 1})
			}
			msgs = append(msgs, st.msg)
		}
		maxConns, maxBytes := 100_000, int64(256<<20)
		if cfg&succSmall != 0 {
			maxConns, maxBytes = smallMaxConns, smallMaxBytes
		}
		mo := migrationModel(msgs, out.stream, maxConns, maxBytes, true)
		if !mo.ok {
			if mo.short && j < len(steps) {
				_, _ = next(j, "CONNS")
			} else {
				out.why = "migration: " + mo.why
			}
			return out
		}
		out.conns = len(mo.conns)
		i += mo.used
	}
	m, ok = next(i, "DONE")
	if !ok {
		return out
	}
	if m.Type != handoffmsg.MsgDone {
		out.why = fmt.Sprintf("%s where DONE was due", m.Type)
		return out
	}
	out.readyOK = true
	return out
}

// successorCount numbers the runs of this process, for their socket names.
var successorCount atomic.Int64

func successorRun(socks *sockets, script []byte, cfg byte) error {
	steps := readSuccessorScript(socks, script)
	want := successorModel(steps, cfg)
	stall := len(steps) > 0 && steps[len(steps)-1].kind == stepStall

	path := fmt.Sprintf("@fdpass-fuzz-successor-%d-%d", os.Getpid(), successorCount.Add(1))
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return err
	}
	heard := make(chan fakeResult, 1)
	go func() { heard <- fakePredecessor(ln, socks, steps, stall) }()

	timeout := 3 * time.Second
	if stall {
		timeout = 300 * time.Millisecond
	}
	opts := graceful.Options{Path: path, Timeout: timeout, Migrate: cfg&succMigrate != 0}
	if cfg&succSmall != 0 {
		opts.MaxMigrated, opts.MaxMigratedBytes = smallMaxConns, smallMaxBytes
	}
	start := time.Now()
	p, newErr := graceful.New(opts)
	tookNew := time.Since(start)
	var readyErr error
	var tookReady time.Duration
	migrated := -1
	inherited := false
	if newErr == nil {
		inherited = p.Inherited()
		if cfg&succListen != 0 {
			if l, err := p.Listen("tcp", "127.0.0.1:0"); err == nil {
				defer l.Close()
			} else {
				p.Close()
				return fmt.Errorf("Listen: %v", err)
			}
		}
		start = time.Now()
		readyErr = p.Ready()
		tookReady = time.Since(start)
		if conns, err := p.MigratedConns(); err == nil {
			migrated = len(conns)
			for _, c := range conns {
				c.Close()
			}
		}
		p.Close()
	}
	var fr fakeResult
	select {
	case fr = <-heard:
	case <-time.After(15 * time.Second):
		return fmt.Errorf("the fake predecessor is stuck")
	}
	if fr.err != nil {
		return fmt.Errorf("fake predecessor: %v", fr.err)
	}

	bound := timeout + 2*time.Second
	timedOut := func(err error) bool {
		return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, graceful.ErrTimeout) ||
			(errors.Is(err, graceful.ErrAlreadyRunning) && stall)
	}
	switch {
	case tookNew > bound:
		return fmt.Errorf("New took %v, Timeout %v", tookNew, timeout)
	case tookReady > bound:
		return fmt.Errorf("Ready took %v, Timeout %v", tookReady, timeout)
	case newErr != nil && !isAny(newErr, graceful.ErrMalformed, graceful.ErrVersion, graceful.ErrRefused,
		graceful.ErrAlreadyRunning, graceful.ErrHandoff, graceful.ErrTimeout):
		return fmt.Errorf("New: error %q matches no sentinel", newErr)
	case readyErr != nil && !errors.Is(readyErr, graceful.ErrHandoff):
		return fmt.Errorf("Ready: error %q does not match ErrHandoff", readyErr)
	case readyErr != nil && !isAny(readyErr, graceful.ErrMalformed, graceful.ErrVersion, graceful.ErrRefused,
		migrate.ErrLimit) && !receiveErrorOK(readyErr) && !errors.Is(readyErr, os.ErrDeadlineExceeded):
		return fmt.Errorf("Ready: error %q says not why", readyErr)
	}
	// A stall lets a timeout end either side early; nothing else does.
	if stall && (timedOut(newErr) || timedOut(readyErr)) {
		if want.newOK && want.readyOK {
			return fmt.Errorf("a timeout (New: %v; Ready: %v) where the model has the handoff done before the stall", newErr, readyErr)
		}
		return nil
	}
	switch {
	case (newErr == nil) != want.newOK:
		return fmt.Errorf("New: %v; the model: ok %v (%s)", newErr, want.newOK, want.why)
	case newErr != nil:
	case inherited != want.inherited:
		return fmt.Errorf("New inherited %v; the model: %v (fresh %v)", inherited, want.inherited, want.fresh)
	case (readyErr == nil) != want.readyOK:
		return fmt.Errorf("Ready: %v; the model: ok %v (%s)", readyErr, want.readyOK, want.why)
	case readyErr == nil && inherited && want.migrate && migrated != want.conns:
		return fmt.Errorf("%d connections migrated, the model says %d", migrated, want.conns)
	}
	return checkSuccessorSaid(fr.said, want, newErr, readyErr, migrated)
}

// checkSuccessorSaid checks what the successor sent the fake predecessor.
func checkSuccessorSaid(said []handoffmsg.Message, want succOutcome, newErr, readyErr error, migrated int) error {
	if len(said) == 0 {
		return fmt.Errorf("the successor said nothing")
	}
	if h := said[0]; h.Type != handoffmsg.MsgHello || h.MinVersion != 1 || h.MaxVersion != 1 {
		return fmt.Errorf("the successor began with %+v", h)
	}
	if !want.inherited || newErr != nil {
		for _, m := range said[1:] {
			if m.Type != handoffmsg.MsgError {
				return fmt.Errorf("the successor, having inherited nothing, said %+v", m)
			}
		}
		return nil
	}
	if len(said) < 2 || said[1].Type != handoffmsg.MsgReady || said[1].Features != want.features {
		return fmt.Errorf("the successor said %+v after HELLO; READY with features %#x was due", said[1:], want.features)
	}
	if readyErr != nil {
		return nil
	}
	rest := said[2:]
	if want.capacity {
		if len(rest) == 0 || rest[0].Type != handoffmsg.MsgCapacity || rest[0].Items < 1 || want.most > 0 && int(rest[0].Items) != want.most {
			return fmt.Errorf("the successor said %+v after READY; CAPACITY (%d, or any from 1 if 0) was due", rest, want.most)
		}
		rest = rest[1:]
	}
	if want.migrate {
		if len(rest) == 0 || rest[0].Type != handoffmsg.MsgAdopted || int(rest[0].Items) != migrated {
			return fmt.Errorf("the successor said %+v after READY; ADOPTED %d was due", rest, migrated)
		}
		rest = rest[1:]
	}
	if len(rest) > 0 {
		return fmt.Errorf("the successor said %+v after a clean handoff", rest)
	}
	return nil
}

// fakeResult is what a fake predecessor heard.
type fakeResult struct {
	said []handoffmsg.Message
	err  error // the fake's own failure, not the successor's
}

// fakePredecessor accepts one connection on ln, reads HELLO, sends steps
// and closes ln; then, unless it stalls, hangs up its sending side; and
// reads what the successor says until it hangs up.
func fakePredecessor(ln *net.UnixListener, socks *sockets, steps []succStep, stall bool) fakeResult {
	var res fakeResult
	defer ln.Close()
	ln.SetDeadline(time.Now().Add(10 * time.Second))
	uc, err := ln.AcceptUnix()
	if err != nil {
		res.err = err
		return res
	}
	c, err := unixmsg.NewConn(uc, &unixmsg.Options{NoAck: true})
	if err != nil {
		uc.Close()
		res.err = err
		return res
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	h := &hearer{uc: uc}
	hear := func() bool {
		m, ok := h.next()
		if ok {
			res.said = append(res.said, m)
		}
		return ok
	}
	if !hear() {
		res.err = errors.New("no HELLO")
		return res
	}
	for _, st := range steps {
		var err error
		switch st.kind {
		case stepStall:
		case stepGarbage:
			_, err = uc.Write(st.raw)
		case stepOffer:
			err = sendOffer(c, ln, socks, st)
		default:
			err = sendMsg(c, st.msg)
		}
		if err != nil {
			// The successor hung up.
			break
		}
	}
	ln.Close()
	if !stall {
		uc.CloseWrite()
	}
	for hear() {
	}
	return res
}

// hearer reads a peer's control messages off the socket itself: a unix
// socket whose peer closes with data unread reports ECONNRESET before the
// messages queued ahead of it, and a unixmsg.Conn gives up at the first
// error. The peer sends no descriptors; any that come are closed.
type hearer struct {
	uc  *net.UnixConn
	dec *wire.Decoder
	eof bool
}

// next returns the next control message, or false at the end (a message
// that does not parse comes as type 0).
func (h *hearer) next() (handoffmsg.Message, bool) {
	if h.dec == nil {
		h.dec = wire.NewDecoder(handoffmsg.ControlLimits(), true)
	}
	buf := make([]byte, 8<<10)
	oob := make([]byte, unix.CmsgSpace(4*8))
	for {
		if m, ok := h.dec.Next(); ok {
			if m.Ack != nil {
				continue
			}
			fd.CloseAll(m.FDs)
			p, err := handoffmsg.Parse(m.Payload)
			if err != nil {
				p = handoffmsg.Message{Reason: err.Error()}
			}
			return p, true
		}
		if h.eof {
			return handoffmsg.Message{}, false
		}
		n, oobn, _, _, err := h.uc.ReadMsgUnix(buf, oob)
		if errors.Is(err, syscall.ECONNRESET) {
			continue
		}
		if err != nil || n == 0 {
			h.eof = true
			continue
		}
		if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, cm := range cms {
				if fds, err := unix.ParseUnixRights(&cm); err == nil {
					fd.CloseAll(fds)
				}
			}
		}
		if h.dec.Feed(buf[:n], nil) != nil {
			fd.CloseAll(h.dec.Drain())
			h.eof = true
		}
	}
}

// sendOffer sends the OFFER of step st: items as st.offerItems choose.
func sendOffer(c *unixmsg.Conn, own *net.UnixListener, socks *sockets, st succStep) error {
	var b unixmsg.Batch
	defer b.Close()
	for i, ch := range st.offerItems {
		var v any
		meta := []string{handoffmsg.MetaRole, handoffmsg.RoleHandoff, handoffmsg.MetaNetwork, "unixpacket"}
		switch ch % 8 {
		case offerOwnHandoff, offerOwnHandoff2:
			v = own
			meta = append(meta, handoffmsg.MetaPID, strconv.Itoa(os.Getpid()))
		case offerSeqHandoff:
			v = socks.seqListener
		case offerTCPHandoff:
			v = socks.tcpLn
		case offerTCP:
			v, meta = socks.tcpLn, []string{handoffmsg.MetaRole, handoffmsg.RoleListener, handoffmsg.MetaNetwork, "tcp", handoffmsg.MetaAddr, "127.0.0.1:0"}
		case offerUDP:
			v, meta = socks.udp, []string{handoffmsg.MetaRole, handoffmsg.RolePacket, handoffmsg.MetaNetwork, "udp", handoffmsg.MetaAddr, "127.0.0.1:0"}
		case offerFile:
			v, meta = socks.devNull, []string{handoffmsg.MetaRole, handoffmsg.RoleFile, handoffmsg.MetaNetwork, "flag=0", handoffmsg.MetaAddr, os.DevNull}
		case offerConnListen:
			v, meta = socks.tcpConn, []string{handoffmsg.MetaRole, handoffmsg.RoleListener, handoffmsg.MetaNetwork, "tcp", handoffmsg.MetaAddr, "127.0.0.1:0"}
		}
		if err := b.Add(strconv.Itoa(i), v, unixmsg.MetaOf(meta...), nil); err != nil {
			return err
		}
	}
	body := binaryOffer(st)
	b.SetPayload(body)
	return c.SendNoAck(context.Background(), &b)
}

// binaryOffer encodes an OFFER with any fields, unchecked.
func binaryOffer(st succStep) []byte {
	body := le16(st.version)
	body = append(body, 0, 0)
	body = append(body, le32(st.features)...)
	body = append(body, le64(7)...)
	body = append(body, le32(st.announced)...)
	body = append(body, le32(30000)...)
	return rawMessage(handoffmsg.MsgOffer, body)
}

// sendMsg sends m: its payload, with its items' sockets.
func sendMsg(c *unixmsg.Conn, m migMsg) error {
	var b unixmsg.Batch
	defer b.Close()
	for j, it := range m.items {
		meta := unixmsg.MetaOf(handoffmsg.MetaRole, handoffmsg.RoleConn, handoffmsg.MetaNetwork, it.network)
		if it.noLabel {
			meta = unixmsg.MetaOf(handoffmsg.MetaRole, handoffmsg.RoleConn)
		}
		if err := b.Add(strconv.Itoa(j), it.v, meta, it.payload); err != nil {
			return err
		}
	}
	b.SetPayload(m.payload)
	return c.SendNoAck(context.Background(), &b)
}

var _ = addScriptSeeds("FuzzHandoffSuccessor", successorSeeds)

// offerStep builds an OFFER step: fields byte and item choices.
func offerStep(fields byte, items ...byte) []byte {
	return append([]byte{stepOffer, fields, byte(len(items))}, items...)
}

func successorSeeds() []scriptSeed {
	const (
		fMigrate = 1
		fStream  = 2
		fUnknown = 4
		fV2      = 2 << 3
		fV0      = 3 << 3
		fCount   = 0x20
		fCap     = 0x40
	)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	offer := offerStep(0, offerOwnHandoff, offerTCP)
	offerMig := offerStep(fMigrate|fStream, offerOwnHandoff, offerTCP, offerUDP, offerFile)
	offerCap := offerStep(fMigrate|fStream|fCap, offerOwnHandoff, offerTCP)
	done := []byte{stepDone, 0}
	doneMig := []byte{stepDone, handoffmsg.FeatureMigrate}
	tcp := conn(itTCP|lblTCP, "state", "GET /")
	httpIdle := conn(itTCP|lblTCP, "net/http", "")
	httpBusy := conn(itTCP|lblTCP, "net/http", "GET / HTTP/1.1\r\n")
	conns := func(op byte, extra []byte, items ...[]byte) []byte {
		return append([]byte{stepConns}, connsOp(op, extra, items...)...)
	}
	return []scriptSeed{
		{name: "handoff", script: cat(offer, done), cfg: []byte{succListen}, add: true},
		{name: "handoff-no-listen", script: cat(offer, done)},
		{name: "migration", script: cat(offerMig, conns(opConns, nil, tcp, httpIdle), doneMig), cfg: []byte{succMigrate | succListen}, add: true},
		{name: "migration-streamed", script: cat(offerMig, conns(opTotalMore, nil, tcp), conns(opConns, nil, tcp), doneMig), cfg: []byte{succMigrate}},
		{name: "migration-empty", script: cat(offerMig, conns(opConns, nil), doneMig), cfg: []byte{succMigrate}},
		{name: "migration-not-wanted-here", script: cat(offerMig, done)},
		{name: "migration-not-offered", script: cat(offer, done), cfg: []byte{succMigrate}},
		{name: "migration-http-unread", script: cat(offerMig, conns(opConns, nil, httpBusy), doneMig), cfg: []byte{succMigrate}},
		{name: "migration-limit", script: cat(offerMig, conns(opConns, nil, tcp, tcp, tcp, tcp), doneMig), cfg: []byte{succMigrate | succSmall}},
		{name: "migration-capacity", script: cat(offerCap, conns(opConns, nil, tcp, tcp), doneMig), cfg: []byte{succMigrate | succSmall}, add: true},
		{name: "migration-capacity-exceeded", script: cat(offerCap, conns(opConns, nil, tcp, tcp, tcp, tcp), doneMig), cfg: []byte{succMigrate | succSmall}},
		{name: "migration-capacity-roomy", script: cat(offerCap, conns(opTotalMore, nil, tcp), conns(opConns, nil, tcp), doneMig), cfg: []byte{succMigrate}},
		{name: "capacity-not-wanted-here", script: cat(offerCap, done)},
		{name: "migration-done-early", script: cat(offerMig, conns(opTotalByte, []byte{2}, tcp), doneMig), cfg: []byte{succMigrate}},
		{name: "migration-stall", script: cat(offerMig, conns(opTotalByte, []byte{2}, tcp), []byte{stepStall}), cfg: []byte{succMigrate}},
		{name: "hang-up-at-once", script: nil, add: true},
		{name: "stall-at-once", script: []byte{stepStall}},
		{name: "stall-after-offer", script: cat(offer, []byte{stepStall})},
		{name: "stall-after-done", script: cat(offer, done, []byte{stepStall})},
		{name: "hang-up-after-offer", script: offer},
		{name: "offer-version-2", script: cat(offerStep(fV2, offerOwnHandoff), done)},
		{name: "offer-version-0", script: cat(offerStep(fV0, offerOwnHandoff), done)},
		{name: "offer-unknown-feature", script: cat(offerStep(fUnknown, offerOwnHandoff), done)},
		{name: "offer-count-wrong", script: cat(append(offerStep(fCount, offerOwnHandoff), 2), done)},
		{name: "offer-no-handoff", script: cat(offerStep(0, offerTCP), done)},
		{name: "offer-two-handoffs", script: cat(offerStep(0, offerOwnHandoff, offerOwnHandoff2), done)},
		{name: "offer-tcp-handoff", script: cat(offerStep(0, offerTCPHandoff), done)},
		{name: "offer-other-seqpacket-handoff", script: cat(offerStep(0, offerSeqHandoff, offerFile), done)},
		{name: "offer-conn-as-listener", script: cat(offerStep(0, offerOwnHandoff, offerConnListen), done), cfg: []byte{succListen}},
		{name: "offer-twice", script: cat(offer, offer)},
		{name: "done-first", script: done},
		{name: "error-first", script: []byte{stepError, byte(handoffmsg.CodeUnauthorized)}},
		{name: "error-after-offer", script: cat(offer, []byte{stepError, byte(handoffmsg.CodeTimeout)})},
		{name: "ready-from-predecessor", script: cat(offer, []byte{stepMessage, byte(handoffmsg.MsgReady), 0, 0})},
		{name: "unknown-message", script: cat(offer, []byte{stepMessage, 10, 0, 0})},
		{name: "conns-unasked", script: cat(offer, conns(opConns, nil, tcp), done)},
		{name: "raw-bad-magic", script: cat([]byte{stepRaw, 4}, []byte("FDPS"))},
		{name: "raw-empty-after-offer", script: cat(offer, []byte{stepRaw, 0})},
		{name: "garbage-first", script: cat([]byte{stepGarbage, 14}, []byte("GET / HTTP/1.1"))},
		{name: "garbage-after-offer", script: cat(offer, []byte{stepGarbage, 3}, []byte("abc"))},
	}
}

//go:build linux

package fuzz_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/fdpass/fdpass/graceful"
	"github.com/fdpass/fdpass/graceful/migrate"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/kinds"
	"github.com/fdpass/fdpass/unixmsg"
)

// Configuration bits of FuzzMigrateReceive (cfg[0]).
const (
	migStream = 1 << iota // ReceiveOptions.Stream: FeatureStreamConns agreed
	migSmall              // MaxConns 3, MaxBytes 48
	migRefuse             // ReceiveOptions.Check refuses the connections
	migStall              // the predecessor stops sending, and stays
)

// Small bounds of a migration (migSmall).
const (
	smallMaxConns = 3
	smallMaxBytes = 48
)

// errCheckRefused is what the Check of migRefuse returns.
var errCheckRefused = errors.New("fuzz: connections refused by Check")

// FuzzMigrateReceive runs the successor's side of a migration
// (migrate.Tracker.Receive, and so takeBatch) against a predecessor that
// sends a fuzzed sequence of messages over a real unix socketpair: CONNS
// batches whose item count, total and connections (real descriptors of
// every kind, labelled with any network, with any payload) need not
// agree, other handoff messages, raw payloads. script is read by
// readMigration; cfg[0] holds the mig* bits. The predecessor then hangs up
// (or, with migStall, stays silent) and reads what the successor answers.
//
// Invariants: no panic; Receive returns before its deadline when the
// predecessor has hung up, and with a deadline error only when it
// stalls; it succeeds exactly when HANDOFF.md says the sequence is a
// migration (readMigration's model), with the connections of the batches
// in order, each with its state and unread bytes, and the predecessor then
// reads ADOPTED with their number; every error matches a sentinel that
// says why (graceful's ErrMalformed, ErrRefused, migrate.ErrLimit, the
// Check's error, the end of the connection, the deadline); and once the
// connections are closed, the process's open-descriptor count is where
// it was.
func FuzzMigrateReceive(f *testing.F) {
	addScripts(f, migrateSeeds())
	f.Fuzz(scripted(migrateRun))
}

// migMsg is one message of a fuzzed migration, as sent and as the model
// reads it.
type migMsg struct {
	payload []byte
	items   []migItem
}

type migItem struct {
	v        any    // the socket sent
	network  string // its label; absent with noLabel
	noLabel  bool
	payload  []byte
	state    []byte // what payload says, when it parses
	buffered []byte
}

// Networks a CONNS item may be labelled with.
var migNetworks = []string{"tcp", "tcp4", "tcp6", "unix", "unixpacket", "udp", "", "tcp "}

// readMigration reads a sequence of messages from script. Each starts with
// an op byte whose low two bits say what it is:
//
//	0 CONNS: bits 2-3 how its total T is given (0: the connections sent so
//	  far and in this batch, as a last batch says; 1: ConnsMore; 2: one
//	  byte; 3: four bytes), bit 4 set if its item count C is given (one
//	  byte) rather than the number of items; then the number of items
//	  (one byte, mod 8), and per item a byte (bits 0-2 the socket, see
//	  sockets.value; bits 3-5 the network label, migNetworks; bit 6 a raw
//	  payload rather than a laid-out one; bit 7 no label), then the
//	  payload: state and unread lengths (one byte each, mod 32) and their
//	  bytes, or a length (mod 8) and raw bytes.
//	1 another handoff message: type byte, then Items and Total (a byte
//	  each), encoded with Append where it encodes, else as a bare header.
//	2 a raw payload: a length byte and the bytes.
//	3 ERROR: a code byte.
//
// Bit 7 of ops 1 to 3 attaches a TCP connection to the message.
func readMigration(socks *sockets, script []byte) []migMsg {
	r := reader{script}
	var msgs []migMsg
	sent := 0
	for len(r.b) > 0 && len(msgs) < 64 {
		op := r.byte()
		var m migMsg
		switch op & 3 {
		case 0:
			m = readConns(&r, socks, op, &sent)
		case 1:
			typ := handoffmsg.MessageType(r.byte())
			msg := handoffmsg.Message{Type: typ, Items: uint32(r.byte()), Total: uint32(r.byte()),
				MinVersion: 1, MaxVersion: 1, Version: 1, Code: 1, PID: 1}
			if msg.Items > msg.Total {
				msg.Items, msg.Total = msg.Total, msg.Items
			}
			if b, err := handoffmsg.Append(nil, msg); err == nil {
				m.payload = b
			} else {
				m.payload = rawMessage(typ)
			}
		case 2:
			m.payload = bytes.Clone(r.bytes(int(r.byte())))
		case 3:
			code := handoffmsg.ErrorCode(r.byte())
			if code == 0 {
				code = handoffmsg.CodeAborted
			}
			m.payload, _ = handoffmsg.Append(nil, handoffmsg.Message{Type: handoffmsg.MsgError, Code: code, Reason: "fuzz"})
		}
		if op&3 != 0 && op&0x80 != 0 {
			m.items = append(m.items, migItem{v: socks.tcpConn, network: "tcp"})
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// readConns reads a CONNS batch whose op byte is op (see readMigration),
// the batch the predecessor sends after sent connections; it adds the
// batch's to sent.
func readConns(r *reader, socks *sockets, op byte, sent *int) migMsg {
	var m migMsg
	n := int(r.byte() % 8)
	var items uint32
	if op&0x10 != 0 {
		items = uint32(r.byte())
	} else {
		items = uint32(n)
	}
	var total uint32
	switch op >> 2 & 3 {
	case 0:
		total = uint32(*sent + n)
	case 1:
		total = handoffmsg.ConnsMore
	case 2:
		total = uint32(r.byte())
	case 3:
		total = binary.LittleEndian.Uint32(append(r.bytes(4), 0, 0, 0, 0))
	}
	for range n {
		d := r.byte()
		it := migItem{v: socks.value(d), network: migNetworks[d>>3&7], noLabel: d&0x80 != 0}
		if d&0x40 != 0 {
			it.payload = bytes.Clone(r.bytes(int(r.byte() % 8)))
			// As HANDOFF.md lays it out, where it does.
			if len(it.payload) >= 4 {
				if s := binary.LittleEndian.Uint32(it.payload); uint64(s) <= uint64(len(it.payload)-4) {
					it.state, it.buffered = it.payload[4:4+s], it.payload[4+s:]
				}
			}
		} else {
			sl, bl := int(r.byte()%32), int(r.byte()%32)
			it.state = bytes.Clone(r.bytes(sl))
			it.buffered = bytes.Clone(r.bytes(bl))
			it.payload = handoffmsg.AppendConnPayload(nil, it.state, it.buffered)
		}
		m.items = append(m.items, it)
	}
	*sent += n
	// Append refuses C > T; a hostile peer does not ask it.
	m.payload = rawMessage(handoffmsg.MsgConns, le32(items), le32(total))
	return m
}

// rawMessage builds a control message with any body, unchecked.
func rawMessage(typ handoffmsg.MessageType, body ...[]byte) []byte {
	var bd []byte
	for _, b := range body {
		bd = append(bd, b...)
	}
	b := append([]byte(handoffmsg.Magic), handoffmsg.Version, byte(typ))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(bd)))
	return append(b, bd...)
}

// migOutcome is what the model expects of Receive.
type migOutcome struct {
	ok    bool
	conns []migItem // when ok, in order
	used  int       // when ok, the messages the migration took
	short bool      // not ok: the batches ended before the last
	why   string    // when not ok
}

// migrationModel says, from HANDOFF.md ("Connection migration"), whether
// the successor accepts msgs as a migration, and with which connections.
// It reads the rules as written there rather than as takeBatch does:
//
//   - the successor reads batches until the count of items reaches T
//     (streamed: until a batch says T);
//   - a batch whose item count is not C, a T that changes between
//     batches, more than T connections, a streamed last batch that does
//     not bring the count to exactly T, or ConnsMore when streaming was
//     not agreed is malformed;
//   - at most maxConns connections and maxBytes of payloads all together;
//     a batch that would exceed either, or a T above the first, is
//     refused;
//   - each item is a TCP conn labelled tcp, tcp4 or tcp6, or a unix conn
//     labelled unix or unixpacket, with a payload of a u32 state length
//     S, S bytes of state, then the unread bytes;
//   - anything but a CONNS batch before the last fails the migration.
//
// With httpCheck, the successor is graceful's Process: a connection whose
// state is "net/http" comes with no unread bytes.
func migrationModel(msgs []migMsg, stream bool, maxConns int, maxBytes int64, httpCheck bool) migOutcome {
	var out migOutcome
	total, have := -1, 0
	var size int64
	fail := func(why string, a ...any) migOutcome {
		out.ok, out.conns, out.why = false, nil, fmt.Sprintf(why, a...)
		return out
	}
	for i, m := range msgs {
		if total >= 0 && have == total {
			break
		}
		out.used = i + 1
		p, err := handoffmsg.Parse(m.payload)
		if err != nil {
			return fail("message %d does not parse: %v", i, err)
		}
		if p.Type != handoffmsg.MsgConns {
			return fail("message %d is %s", i, p.Type)
		}
		n := len(m.items)
		switch {
		case int(p.Items) != n:
			return fail("CONNS says %d, brings %d", p.Items, n)
		case p.Total == handoffmsg.ConnsMore && !stream:
			return fail("ConnsMore without streaming")
		case p.Total != handoffmsg.ConnsMore && total >= 0 && int64(p.Total) != int64(total):
			return fail("T changed from %d to %d", total, p.Total)
		case p.Total != handoffmsg.ConnsMore && int64(have+n) > int64(p.Total):
			return fail("%d connections of %d", have+n, p.Total)
		case p.Total != handoffmsg.ConnsMore && stream && int64(have+n) != int64(p.Total):
			return fail("streamed last batch brings %d of %d", have+n, p.Total)
		case p.Total != handoffmsg.ConnsMore && int64(p.Total) > int64(maxConns):
			return fail("T %d above %d", p.Total, maxConns)
		case have+n > maxConns:
			return fail("%d connections, at most %d", have+n, maxConns)
		}
		for _, it := range m.items {
			size += int64(len(it.payload))
		}
		if size > maxBytes {
			return fail("%d bytes, at most %d", size, maxBytes)
		}
		for i, it := range m.items {
			kind := socketKind(it.v)
			label := it.network
			if it.noLabel {
				label = ""
			}
			switch {
			case kind == kinds.TCPConn && (label == "tcp" || label == "tcp4" || label == "tcp6"):
			case kind == kinds.UnixConn && (label == "unix" || label == "unixpacket"):
			default:
				return fail("item %d: a %s labelled %q", i, kind, label)
			}
			if len(it.payload) < 4 || uint64(binary.LittleEndian.Uint32(it.payload)) > uint64(len(it.payload)-4) {
				return fail("item %d: payload %q", i, it.payload)
			}
			out.conns = append(out.conns, it)
		}
		have += n
		if p.Total != handoffmsg.ConnsMore {
			total = int(p.Total)
		}
	}
	if total < 0 || have < total {
		out = fail("the batches end at %d connections of %d", have, total)
		out.short = true
		return out
	}
	if httpCheck {
		for i, c := range out.conns {
			if string(c.state) == "net/http" && len(c.buffered) > 0 {
				return fail("HTTP connection %d with %d unread bytes", i, len(c.buffered))
			}
		}
	}
	out.ok = true
	return out
}

func migrateRun(socks *sockets, script []byte, cfg byte) error {
	msgs := readMigration(socks, script)
	stream := cfg&migStream != 0
	maxConns, maxBytes := 100_000, int64(256<<20)
	opts := migrate.ReceiveOptions{Stream: stream}
	if cfg&migSmall != 0 {
		maxConns, maxBytes = smallMaxConns, smallMaxBytes
		opts.MaxConns, opts.MaxBytes = smallMaxConns, smallMaxBytes
	}
	if cfg&migRefuse != 0 {
		opts.Check = func([]*migrate.Conn) error { return errCheckRefused }
	}
	want := migrationModel(msgs, stream, maxConns, maxBytes, false)
	if want.ok && cfg&migRefuse != 0 {
		want = migOutcome{why: "Check refuses"}
	}
	stall := cfg&migStall != 0

	// Both ends as graceful makes its successor's: no acknowledgements.
	succ, pred, err := unixmsg.Pair(&unixmsg.Options{NoAck: true})
	if err != nil {
		return err
	}
	defer succ.Close()
	answer := make(chan predAnswer, 1)
	hangUp := make(chan struct{})
	go func() { answer <- predecessorSends(pred, msgs, stall, hangUp) }()

	wait := 5 * time.Second
	if stall {
		wait = 200 * time.Millisecond
	}
	succ.SetDeadline(time.Now().Add(wait))
	start := time.Now()
	var tr migrate.Tracker
	conns, err := tr.Receive(succ, opts)
	took := time.Since(start)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	close(hangUp)
	// Read what the predecessor sent and the successor did not, until
	// the predecessor hangs up: closing a unix socket with unread data
	// would reset the predecessor's end before it reads the answer. No
	// control buffer: the kernel closes the descriptors dropped.
	succ.SetDeadline(time.Now().Add(10 * time.Second))
	succ.UnixConn().CloseWrite()
	buf := make([]byte, 64<<10)
	for {
		if _, err := succ.UnixConn().Read(buf); err != nil {
			break
		}
	}
	var a predAnswer
	select {
	case a = <-answer:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("the predecessor is stuck")
	}

	timedOut := errors.Is(err, os.ErrDeadlineExceeded)
	switch {
	case took > wait+2*time.Second:
		return fmt.Errorf("Receive took %v, deadline %v", took, wait)
	case timedOut && !stall:
		return fmt.Errorf("Receive waited for its deadline with the predecessor gone: %v", err)
	case timedOut && !want.short:
		return fmt.Errorf("Receive waited for its deadline; the model says: %s", want.why)
	case err != nil && !migrateErrorOK(err):
		return fmt.Errorf("Receive: error %q matches no sentinel", err)
	case err == nil && !want.ok:
		return fmt.Errorf("Receive accepted %d connections; the model says: %s", len(conns), want.why)
	case err != nil && want.ok:
		return fmt.Errorf("Receive: %v; the model accepts %d connections", err, len(want.conns))
	case err != nil:
		return nil
	}
	if len(conns) != len(want.conns) {
		return fmt.Errorf("Receive returned %d connections, the model %d", len(conns), len(want.conns))
	}
	for i, c := range conns {
		w := want.conns[i]
		if !bytes.Equal(c.State(), w.state) || c.Buffered() != len(w.buffered) {
			return fmt.Errorf("connection %d: state %q and %d unread bytes, want %q and %q", i, c.State(), c.Buffered(), w.state, w.buffered)
		}
		got := make([]byte, 0, len(w.buffered))
		buf := make([]byte, 7)
		for c.Buffered() > 0 {
			n, err := c.Read(buf)
			if err != nil {
				return fmt.Errorf("connection %d: reading what came with it: %v", i, err)
			}
			got = append(got, buf[:n]...)
		}
		if !bytes.Equal(got, w.buffered) {
			return fmt.Errorf("connection %d: read %q of what came with it, want %q", i, got, w.buffered)
		}
	}
	if a.err != nil || a.m.Type != handoffmsg.MsgAdopted || int(a.m.Items) != len(conns) {
		return fmt.Errorf("Receive accepted %d connections; the predecessor read %+v, %v", len(conns), a.m, a.err)
	}
	return nil
}

// migrateErrorOK reports whether err, from Receive, says why: a sentinel
// of graceful or migrate, Check's error, the end of the connection, the
// deadline.
func migrateErrorOK(err error) bool {
	return isAny(err,
		graceful.ErrMalformed, graceful.ErrRefused, graceful.ErrVersion, migrate.ErrLimit, errCheckRefused,
		io.EOF, unixmsg.ErrUnexpectedEOF, os.ErrDeadlineExceeded,
	)
}

type predAnswer struct {
	m   handoffmsg.Message
	err error
}

// predecessorSends sends msgs on c without acknowledgements, as graceful's
// predecessor sends CONNS batches, then hangs up its sending side (unless
// stall: then it waits for hangUp) and returns the first message the
// successor sends. It closes c.
func predecessorSends(c *unixmsg.Conn, msgs []migMsg, stall bool, hangUp <-chan struct{}) predAnswer {
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for _, m := range msgs {
		var b unixmsg.Batch
		var err error
		for j, it := range m.items {
			meta := unixmsg.MetaOf(handoffmsg.MetaRole, handoffmsg.RoleConn, handoffmsg.MetaNetwork, it.network)
			if it.noLabel {
				meta = unixmsg.MetaOf(handoffmsg.MetaRole, handoffmsg.RoleConn)
			}
			if err = b.Add(strconv.Itoa(j), it.v, meta, it.payload); err != nil {
				break
			}
		}
		if err == nil {
			b.SetPayload(m.payload)
			err = c.SendNoAck(context.Background(), &b)
		}
		b.Close()
		if err != nil {
			// The successor has hung up: what it said is in its
			// answer.
			break
		}
	}
	if stall {
		<-hangUp
	} else {
		c.UnixConn().CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, err := handoffmsg.Receive(c)
	return predAnswer{m, err}
}

var _ = addScriptSeeds("FuzzMigrateReceive", migrateSeeds)

// Script builders for the seeds (see readMigration).
const (
	opConns      = 0
	opTotalMore  = 1 << 2
	opTotalByte  = 2 << 2
	opTotalFour  = 3 << 2
	opCount      = 0x10
	opMessage    = 1
	opRaw        = 2
	opError      = 3
	opAttachConn = 0x80

	itTCP        = 0
	itUnix       = 1
	itPacketConn = 2
	itUDP        = 3
	itFile       = 4
	itTCPLn      = 5

	lblTCP        = 0 << 3
	lblTCP4       = 1 << 3
	lblTCP6       = 2 << 3
	lblUnix       = 3 << 3
	lblUnixpacket = 4 << 3
	lblUDP        = 5 << 3
	lblEmpty      = 6 << 3
	lblJunk       = 7 << 3
	itRaw         = 0x40
	itNoLabel     = 0x80
)

// conn is one item of a CONNS op: descriptor and label d, state and
// unread bytes.
func conn(d byte, state, unread string) []byte {
	b := []byte{d}
	if d&itRaw != 0 {
		return append(append(b, byte(len(state))), state...)
	}
	b = append(b, byte(len(state)), byte(len(unread)))
	return append(append(b, state...), unread...)
}

// connsOp is a CONNS op with the items given.
func connsOp(op byte, extra []byte, items ...[]byte) []byte {
	b := []byte{op, byte(len(items))}
	if op&opCount != 0 {
		b = append(b, extra[0])
		extra = extra[1:]
	}
	b = append(b, extra...)
	for _, it := range items {
		b = append(b, it...)
	}
	return b
}

func migrateSeeds() []scriptSeed {
	tcp := conn(itTCP|lblTCP, "state", "GET /")
	unixc := conn(itUnix|lblUnix, "42 ada", "")
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	seeds := []scriptSeed{
		{name: "one-batch", script: connsOp(opConns, nil, tcp, unixc), add: true},
		{name: "empty-migration", script: connsOp(opConns, nil)},
		{name: "two-batches-total-known", script: cat(connsOp(opTotalByte, []byte{3}, tcp, tcp), connsOp(opTotalByte, []byte{3}, unixc))},
		{name: "streamed", script: cat(connsOp(opTotalMore, nil, tcp), connsOp(opTotalMore, nil), connsOp(opConns, nil, unixc)), cfg: []byte{migStream}, add: true},
		{name: "streamed-not-agreed", script: cat(connsOp(opTotalMore, nil, tcp), connsOp(opConns, nil, unixc))},
		{name: "streamed-last-short", script: cat(connsOp(opTotalMore, nil, tcp), connsOp(opTotalByte, []byte{3}, unixc)), cfg: []byte{migStream}},
		{name: "streamed-total-first", script: cat(connsOp(opTotalByte, []byte{2}, tcp), connsOp(opConns, nil, unixc)), cfg: []byte{migStream}},
		{name: "count-above-items", script: connsOp(opConns|opCount, []byte{3}, tcp, tcp)},
		{name: "count-below-items", script: connsOp(opConns|opCount, []byte{1}, tcp, tcp)},
		{name: "count-above-total", script: connsOp(opConns|opCount|opTotalByte, []byte{2, 1}, tcp, tcp)},
		{name: "total-changes", script: cat(connsOp(opTotalByte, []byte{3}, tcp), connsOp(opTotalByte, []byte{4}, tcp))},
		{name: "more-than-total", script: cat(connsOp(opTotalByte, []byte{1}, tcp, tcp))},
		{name: "total-huge", script: connsOp(opTotalFour, le32(0xfffffffe), tcp)},
		{name: "total-sign-bit", script: connsOp(opTotalFour, le32(0x80000000), tcp)},
		{name: "ends-short", script: connsOp(opTotalByte, []byte{3}, tcp)},
		{name: "stall-short", script: connsOp(opTotalByte, []byte{3}, tcp), cfg: []byte{migStall}},
		{name: "stall-after-all", script: connsOp(opConns, nil, tcp), cfg: []byte{migStall}},
		{name: "limit-conns-at", script: connsOp(opConns, nil, tcp, tcp, unixc), cfg: []byte{migSmall}},
		{name: "limit-conns-past", script: connsOp(opConns, nil, tcp, tcp, unixc, tcp), cfg: []byte{migSmall}},
		{name: "limit-conns-streamed", script: cat(connsOp(opTotalMore, nil, tcp, tcp), connsOp(opTotalMore, nil, tcp, tcp)), cfg: []byte{migSmall | migStream}},
		{name: "limit-total-past", script: connsOp(opTotalByte, []byte{4}, tcp), cfg: []byte{migSmall}},
		{name: "limit-bytes-at", script: connsOp(opConns, nil, conn(itTCP|lblTCP, pad(20), pad(24))), cfg: []byte{migSmall}},
		{name: "limit-bytes-past", script: connsOp(opConns, nil, conn(itTCP|lblTCP, pad(20), pad(25))), cfg: []byte{migSmall}},
		{name: "check-refuses", script: connsOp(opConns, nil, tcp), cfg: []byte{migRefuse}},
		{name: "kind-udp", script: connsOp(opConns, nil, conn(itUDP|lblUDP, "", ""))},
		{name: "kind-file-as-tcp", script: connsOp(opConns, nil, conn(itFile|lblTCP, "", ""))},
		{name: "kind-listener-as-tcp", script: connsOp(opConns, nil, conn(itTCPLn|lblTCP, "", ""))},
		{name: "kind-unix-as-tcp", script: connsOp(opConns, nil, conn(itUnix|lblTCP, "", ""))},
		{name: "kind-tcp-as-unix", script: connsOp(opConns, nil, conn(itTCP|lblUnix, "", ""))},
		{name: "kind-packet-as-unixpacket", script: connsOp(opConns, nil, conn(itPacketConn|lblUnixpacket, "s", "u"), conn(itTCP|lblTCP6, "", ""), conn(itTCP|lblTCP4, "", ""))},
		{name: "label-empty", script: connsOp(opConns, nil, conn(itTCP|lblEmpty, "", ""))},
		{name: "label-junk", script: connsOp(opConns, nil, conn(itTCP|lblJunk, "", ""))},
		{name: "label-absent", script: connsOp(opConns, nil, conn(itTCP|lblTCP|itNoLabel, "", ""))},
		{name: "payload-short", script: connsOp(opConns, nil, conn(itTCP|lblTCP|itRaw, "ab", ""))},
		{name: "payload-state-past-end", script: connsOp(opConns, nil, conn(itTCP|lblTCP|itRaw, "\x05\x00\x00\x00abcd", ""))},
		{name: "payload-empty", script: connsOp(opConns, nil, conn(itTCP|lblTCP|itRaw, "", ""))},
		{name: "adopted-instead", script: []byte{opMessage, byte(handoffmsg.MsgAdopted), 1, 1}},
		{name: "done-instead", script: cat(connsOp(opTotalByte, []byte{2}, tcp), []byte{opMessage, byte(handoffmsg.MsgDone), 0, 0})},
		{name: "done-after-last", script: cat(connsOp(opConns, nil, tcp), []byte{opMessage, byte(handoffmsg.MsgDone), 0, 0})},
		{name: "unknown-type", script: []byte{opMessage, 10, 0, 0}},
		{name: "message-with-descriptor", script: []byte{opMessage | opAttachConn, byte(handoffmsg.MsgHello), 0, 0}},
		{name: "error-from-predecessor", script: []byte{opError, byte(handoffmsg.CodeAborted)}},
		{name: "raw-garbage", script: cat([]byte{opRaw, 5}, []byte("hello"))},
		{name: "raw-garbage-with-descriptor", script: cat([]byte{opRaw | opAttachConn, 3}, []byte("abc"))},
		{name: "raw-empty", script: []byte{opRaw, 0}},
		{name: "raw-bad-magic-conns", script: cat([]byte{opRaw, 16}, []byte("FDPS\x01\x06\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00"))},
		{name: "nothing", script: nil},
	}
	return seeds
}

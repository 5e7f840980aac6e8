//go:build linux

package graceful

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/internal/fdtest"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/kinds"
	"github.com/fdpass/fdpass/unixmsg"
)

// FuzzOffer hands a successor's adoption (index, convert, take, and
// Listen, ListenPacket, OpenFile and File on top) an OFFER batch of real
// descriptors with arbitrary meta, received over a unix socketpair, then
// asks for a fuzzed sequence of sockets and files. items and asks are
// read by readOffer.
//
// Invariants: no panic; index accepts the batch exactly when it holds one
// item labelled handoff, a unix SOCK_SEQPACKET listener, and the other
// items are whatever they are; an item adopted matches what was asked:
// its role, network and address as given, its namespace the one asked
// for or none, its kind the one asked for, and a socket is bound where
// the address says (HANDOFF.md, "OFFER items": port 0 any port, a host
// name one of its addresses, no host the unspecified address), of the
// network asked (IPv4 for tcp4, SOCK_SEQPACKET for unixpacket, ...) and
// in the namespace asked; when such an item is there, it is adopted
// rather than a new socket made; every error says why; and once the
// adopted values and what release leaves are closed, the process's
// open-descriptor count is where it was.
func FuzzOffer(f *testing.F) {
	for _, s := range offerSeeds() {
		if s.add {
			f.Add(s.items, s.asks)
		}
	}
	f.Fuzz(func(t *testing.T, items, asks []byte) {
		pool, err := openOfferPool()
		if err != nil {
			t.Fatal(err)
		}
		before, err := fd.Count()
		if err != nil {
			t.Fatal(err)
		}
		if err := offerRun(pool, items, asks); err != nil {
			t.Fatal(err)
		}
		if err := fdtest.AwaitCount(before); err != nil {
			t.Fatal(err)
		}
	})
}

// offerPool holds one socket or file of every kind an OFFER may carry,
// and the labels and requests a run picks from, which name them.
type offerPool struct {
	vals  []any // Go values, sent as duplicates
	ks    []kinds.Kind
	addrs []string // labels and requests: addresses and names
	nets  []string // networks
	roles []string // roles
	nss   []string // namespaces: this one, none, another
}

var (
	offerOnce    sync.Once
	offerErr     error
	theOfferPool offerPool
)

func openOfferPool() (*offerPool, error) {
	offerOnce.Do(func() { offerErr = theOfferPool.open() })
	return &theOfferPool, offerErr
}

func (o *offerPool) open() error {
	// Abstract names: nothing is left in the file system.
	name := func(what string) string { return fmt.Sprintf("@fdpass-fuzz-offer-%d-%s", os.Getpid(), what) }
	listen := func(network, addr string) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		if err == nil {
			if u, ok := ln.(*net.UnixListener); ok {
				u.SetUnlinkOnClose(false)
			}
			o.vals = append(o.vals, ln)
		}
		return ln, err
	}
	port := func(a net.Addr) string { return strconv.Itoa(a.(*net.TCPAddr).Port) }
	t4, err := listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	t6, err := listen("tcp6", "[::1]:0")
	if err != nil {
		return err
	}
	tAny, err := listen("tcp", ":0")
	if err != nil {
		return err
	}
	t4Any, err := listen("tcp4", "0.0.0.0:0")
	if err != nil {
		return err
	}
	us := name("stream")
	if _, err := listen("unix", us); err != nil {
		return err
	}
	up := name("packet")
	if _, err := listen("unixpacket", up); err != nil {
		return err
	}
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	o.vals = append(o.vals, udp)
	ug := name("gram")
	gram, err := net.ListenPacket("unixgram", ug)
	if err != nil {
		return err
	}
	o.vals = append(o.vals, gram)
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	o.vals = append(o.vals, null)
	conn, err := net.Dial("tcp4", t4.Addr().String())
	if err != nil {
		return err
	}
	o.vals = append(o.vals, conn)
	for _, v := range o.vals {
		n, info, err := kinds.FromValue(v)
		if err != nil {
			return err
		}
		fd.Close(n)
		o.ks = append(o.ks, info.Kind)
	}
	p4, p6, pAny, p4Any, pUDP := port(t4.Addr()), port(t6.Addr()), port(tAny.Addr()), port(t4Any.Addr()), strconv.Itoa(udp.LocalAddr().(*net.UDPAddr).Port)
	o.addrs = []string{
		"127.0.0.1:" + p4, ":" + p4, "localhost:" + p4, "[::1]:" + p6, ":" + p6, "[::1]:" + p4,
		":" + pAny, "[::]:" + pAny, "0.0.0.0:" + pAny, "0.0.0.0:" + p4Any, ":" + p4Any, "127.0.0.1:0",
		":0", us, up, ug, "127.0.0.1:" + pUDP, ":" + pUDP, os.DevNull, "name", "[:", "127.0.0.1:http",
		"localhost:0", "[::ffff:127.0.0.1]:" + p4,
	}
	o.nets = []string{"tcp", "tcp4", "tcp6", "unix", "unixpacket", "udp", "udp4", "udp6", "unixgram",
		"flag=0", "flag=2", "flag=1025", ""}
	o.roles = []string{handoffmsg.RoleHandoff, handoffmsg.RoleListener, handoffmsg.RolePacket,
		handoffmsg.RoleFile, handoffmsg.RoleNamed, handoffmsg.RoleConn, "", "Listener"}
	o.nss = []string{currentNetNS(), "", "1:1"}
	return nil
}

func pick[T any](s []T, b byte) T { return s[int(b)%len(s)] }

// offerItem is one item of a fuzzed OFFER.
type offerItem struct {
	v                          any
	kind                       kinds.Kind
	role, network, addr, netns string
	noNetNS                    bool // no netns key at all
}

// readOffer reads the items: five bytes each, the descriptor, role,
// network, address and a byte whose bits 0-1 pick the namespace (bit 2:
// no netns key) and whose bit 3 adds a meta key nobody knows.
func (o *offerPool) readOffer(b []byte) ([]offerItem, []bool) {
	var items []offerItem
	var extra []bool
	for i := 0; i+5 <= len(b) && len(items) < 32; i += 5 {
		k := int(b[i]) % len(o.vals)
		it := offerItem{v: o.vals[k], kind: o.ks[k], role: pick(o.roles, b[i+1]), network: pick(o.nets, b[i+2]),
			addr: pick(o.addrs, b[i+3]), netns: pick(o.nss, b[i+4]&3), noNetNS: b[i+4]&4 != 0}
		if it.noNetNS {
			it.netns = ""
		}
		items = append(items, it)
		extra = append(extra, b[i+4]&8 != 0)
	}
	return items, extra
}

// offerAsk is one request of a run.
type offerAsk struct {
	what          byte // 0 Listen, 1 ListenPacket, 2 OpenFile, 3 File
	network, addr string
	ns            string // Listen: the namespace asked for
	flag          int    // OpenFile
}

// fileFlags are the flags OpenFile is asked with.
var fileFlags = []int{os.O_RDONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND, os.O_RDWR | os.O_APPEND}

// readAsks reads the requests: four bytes each, what (mod 4), network,
// address, and the namespace (bits 0-1, Listen) or flags (bits 2-3,
// OpenFile).
func (o *offerPool) readAsks(b []byte) []offerAsk {
	var asks []offerAsk
	for i := 0; i+4 <= len(b) && len(asks) < 32; i += 4 {
		a := offerAsk{what: b[i] % 4, network: pick(o.nets, b[i+1]), addr: pick(o.addrs, b[i+2]),
			ns: o.nss[0], flag: pick(fileFlags, b[i+3]>>2)}
		if a.what == 0 && b[i+3]&3 == 2 {
			// Listen in another namespace, as ListenInNetNS does.
			a.ns = o.nss[2]
		}
		asks = append(asks, a)
	}
	return asks
}

// errNoCreate is what Listen's create returns: a run only adopts.
var errNoCreate = errors.New("fuzz: Listen would create a listener")

func offerRun(o *offerPool, itemBytes, askBytes []byte) error {
	items, extra := o.readOffer(itemBytes)
	asks := o.readAsks(askBytes)

	var out unixmsg.Batch
	defer out.Close()
	for i, it := range items {
		meta := unixmsg.Meta{{Key: handoffmsg.MetaRole, Value: it.role}, {Key: handoffmsg.MetaNetwork, Value: it.network},
			{Key: handoffmsg.MetaAddr, Value: it.addr}}
		if !it.noNetNS {
			meta = append(meta, unixmsg.KV{Key: handoffmsg.MetaNetNS, Value: it.netns})
		}
		if extra[i] {
			meta = append(meta, unixmsg.KV{Key: handoffmsg.MetaPID, Value: "x"}, unixmsg.KV{Key: "colour", Value: "blue"})
		}
		if err := out.Add(strconv.Itoa(i), it.v, meta, nil); err != nil {
			return err
		}
	}
	tx, rx, err := unixmsg.Pair(&unixmsg.Options{NoAck: true})
	if err != nil {
		return err
	}
	defer rx.Close()
	err = tx.Send(&out)
	tx.Close()
	if err != nil {
		return err
	}
	b, err := rx.Receive()
	if err != nil {
		return err
	}

	p := &Process{opts: Options{Path: "@fdpass-fuzz-offer"}, log: slog.New(slog.DiscardHandler), ns: currentNetNS(),
		exit: make(chan struct{}), closing: make(chan struct{})}
	in, err := p.index(b, currentOwnNetNS())
	handoffs := 0
	goodHandoff := false
	for _, it := range items {
		if it.role == handoffmsg.RoleHandoff {
			handoffs++
			ln, ok := it.v.(net.Listener)
			goodHandoff = ok && it.kind == kinds.UnixListener && ln.Addr().Network() == "unixpacket"
		}
	}
	// HANDOFF.md: exactly one item has role handoff, a unix
	// SOCK_SEQPACKET listener.
	wantIndex := handoffs == 1 && goodHandoff
	if err != nil {
		b.Close()
		if wantIndex {
			return fmt.Errorf("index refused an OFFER with one handoff listener: %v", err)
		}
		if !errors.Is(err, ErrMalformed) {
			return fmt.Errorf("index: error %q does not match ErrMalformed", err)
		}
		return nil
	}
	defer p.ln.Close()
	if !wantIndex {
		return fmt.Errorf("index accepted an OFFER with %d items labelled handoff (a unix listener: %v)", handoffs, goodHandoff)
	}
	if got := p.ln.Addr().Network(); got != "unixpacket" {
		return fmt.Errorf("index took a %s listener as the handoff listener", got)
	}
	p.in = in
	var adopted []io.Closer
	defer func() {
		in.release()
		for _, c := range adopted {
			c.Close()
		}
	}()
	for n, a := range asks {
		held := func() []bool {
			h := make([]bool, b.Len())
			for i := range h {
				converted := i < len(in.vals) && in.vals[i] != nil
				h[i] = !b.Taken(i) || converted
			}
			return h
		}
		was := held()
		var cands []int
		for i, it := range items {
			if was[i] && o.candidate(it, a) {
				cands = append(cands, i)
			}
		}
		v, err := o.ask(p, a)
		if c, ok := v.(io.Closer); ok {
			adopted = append(adopted, c)
		}
		now := held()
		var gone []int
		for i := range now {
			if was[i] && !now[i] {
				gone = append(gone, i)
			}
		}
		what := fmt.Sprintf("ask %d (%s %q %q ns %q flag %#x)", n, [...]string{"Listen", "ListenPacket", "OpenFile", "File"}[a.what], a.network, a.addr, a.ns, a.flag)
		switch {
		case len(gone) > 1:
			return fmt.Errorf("%s took items %v", what, gone)
		case len(gone) == 1 && err != nil:
			return fmt.Errorf("%s took item %d and failed: %v", what, gone[0], err)
		case len(gone) == 1 && !slices.Contains(cands, gone[0]):
			it := items[gone[0]]
			return fmt.Errorf("%s adopted item %d, a %s labelled %s %q %q ns %q (no netns key: %v), which does not match",
				what, gone[0], it.kind, it.role, it.network, it.addr, it.netns, it.noNetNS)
		case len(gone) == 0 && len(cands) > 0:
			return fmt.Errorf("%s adopted nothing (%v), but items %v match", what, err, cands)
		case err != nil && !isAny(err, errNoCreate, ErrNetwork, os.ErrNotExist, errSyscall):
			return fmt.Errorf("%s: unexpected error %v", what, err)
		}
	}
	return nil
}

// errSyscall matches an error of a system call that made something
// anew, where the run could not adopt.
var errSyscall = errors.New("a system call failed")

// isAny reports whether err matches one of targets; errSyscall stands
// for any *os.SyscallError or *net.OpError.
func isAny(err error, targets ...error) bool {
	for _, t := range targets {
		if t == errSyscall {
			var se *os.SyscallError
			var oe *net.OpError
			var ae *net.AddrError
			var pe *os.PathError
			if errors.As(err, &se) || errors.As(err, &oe) || errors.As(err, &ae) || errors.As(err, &pe) {
				return true
			}
			continue
		}
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// packetAsk reports whether a run makes ListenPacket request a. Where
// nothing is inherited ListenPacket makes a socket: not one bound to a
// file name (it would stay behind), only to an abstract one.
func packetAsk(a offerAsk) bool {
	return a.network != "unixgram" || strings.HasPrefix(a.addr, "@")
}

// ask makes request a of p, and returns what it got.
func (o *offerPool) ask(p *Process, a offerAsk) (any, error) {
	switch a.what {
	case 0:
		return p.listen(a.ns, a.network, a.addr, func() (net.Listener, error) { return nil, errNoCreate })
	case 1:
		if !packetAsk(a) {
			return nil, nil
		}
		pc, err := p.ListenPacket(a.network, a.addr)
		return pc, err
	case 2:
		f, err := p.OpenFile(a.addr, a.flag, 0)
		return f, err
	}
	f, err := p.File(a.addr, func() (*os.File, error) { return nil, os.ErrNotExist })
	return f, err
}

// candidate reports whether item it matches request a, as HANDOFF.md
// ("OFFER items") and the docs of Listen, ListenPacket, OpenFile and File
// say: the label, the kind, and for a socket where it is bound, its
// network and its namespace.
func (o *offerPool) candidate(it offerItem, a offerAsk) bool {
	var role string
	var want []kinds.Kind
	network := a.network
	switch a.what {
	case 0:
		role = handoffmsg.RoleListener
		switch network {
		case "tcp", "tcp4", "tcp6":
			want = []kinds.Kind{kinds.TCPListener}
		case "unix", "unixpacket":
			want = []kinds.Kind{kinds.UnixListener}
		}
	case 1:
		if !packetAsk(a) {
			return false
		}
		role = handoffmsg.RolePacket
		switch network {
		case "udp", "udp4", "udp6":
			want = []kinds.Kind{kinds.UDP}
		case "unixgram":
			want = []kinds.Kind{kinds.UnixDatagram}
		}
	case 2:
		role = handoffmsg.RoleFile
		network = "flag=" + strconv.Itoa(a.flag&(os.O_RDONLY|os.O_WRONLY|os.O_RDWR|os.O_APPEND))
		want = []kinds.Kind{kinds.File}
	case 3:
		// File registers what it returns so (listen.go): role named,
		// the name as address, no network, no namespace.
		return it.role == handoffmsg.RoleNamed && it.addr == a.addr && it.network == "" && it.netns == ""
	}
	if it.role != role || it.network != network || it.addr != a.addr || !slices.Contains(want, it.kind) {
		return false
	}
	if a.what == 2 {
		return it.netns == ""
	}
	if it.netns != "" && it.netns != a.ns {
		return false
	}
	return socketMatches(it.v, a.network, a.addr, a.ns)
}

// socketMatches reports whether the socket v is bound where addr says, is
// of network and lives in namespace ns.
func socketMatches(v any, network, addr, ns string) bool {
	var local net.Addr
	switch v := v.(type) {
	case net.Listener:
		local = v.Addr()
	case net.PacketConn:
		local = v.LocalAddr()
	default:
		return false
	}
	if ns != currentNetNS() {
		// Every socket here lives in this namespace, and the kernel
		// tells (the tests run as root).
		return os.Geteuid() != 0
	}
	switch network {
	case "unix", "unixpacket", "unixgram":
		return local.Network() == network && local.String() == addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	got, err := netip.ParseAddrPort(local.String())
	if err != nil {
		return false
	}
	// The family of the socket itself: every socket here is bound to a
	// plain IPv4 or IPv6 address, which says it.
	switch {
	case strings.HasSuffix(network, "4") && !got.Addr().Is4():
		return false
	case strings.HasSuffix(network, "6") && !got.Addr().Is6():
		return false
	}
	if port != "0" && port != strconv.Itoa(int(got.Port())) {
		if p, err := net.LookupPort(network, port); err != nil || p != int(got.Port()) {
			return false
		}
	}
	ip := got.Addr().Unmap()
	if host == "" {
		return ip.IsUnspecified()
	}
	if want, err := netip.ParseAddr(host); err == nil {
		return want.Unmap() == ip
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return false
	}
	for _, a := range ips {
		if w, ok := netip.AddrFromSlice(a); ok && w.Unmap() == ip {
			return true
		}
	}
	return false
}

type offerSeed struct {
	name        string
	items, asks []byte
	add         bool
}

var _ = addFuzzSeeds(func() map[string][][]byte {
	m := map[string][][]byte{}
	for _, s := range offerSeeds() {
		m["FuzzOffer/"+s.name] = [][]byte{s.items, s.asks}
	}
	return m
})

// Indices into the pool's tables, for the seeds.
const (
	vT4, vT6, vTAny, vT4Any, vUnix, vPacket, vUDP, vGram, vNull, vConn = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9

	rHandoff, rListener, rPacket, rFile, rNamed, rConn, rEmpty, rCaps = 0, 1, 2, 3, 4, 5, 6, 7

	nTCP, nTCP4, nTCP6, nUnix, nUnixpacket, nUDP, nUDP4, nUDP6, nUnixgram, nFlag0, nFlag2, nFlagAppend, nEmpty = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12

	a4, aAny4Port, aLocalhost4, a6, aAny6Port, a6On4Port, aAnyPort, aV6AnyPort, aV4AnyOnAnyPort, aV4Any4, aAny4Any,
	aLoopback0, aAny0, aUnix, aPacket, aGram, aUDP, aAnyUDP, aDevNull, aName, aJunk, aService, aLocalhost0, aMapped4 = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23

	// The item's namespace byte.
	itemNSHere, itemNSNone, itemNSOther = 0, 1, 2
	nsNoKey                             = 4
	nsExtraMeta                         = 8

	// The request's what byte.
	askListen, askPacket, askFile, askNamed = 0, 1, 2, 3
	// The request's last byte: OpenFile's flags (fileFlags), Listen's
	// namespace.
	flagRDONLY, flagRDWR, flagAppend = 0 << 2, 1 << 2, 2 << 2
	askOtherNS                       = 2
)

func it(v, role, network, addr, ns byte) []byte { return []byte{v, role, network, addr, ns} }
func ask(what, network, addr, last byte) []byte { return []byte{what, network, addr, last} }

func offerSeeds() []offerSeed {
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	handoff := it(vPacket, rHandoff, nUnixpacket, aPacket, nsNoKey)
	return []offerSeed{
		{name: "predecessor-like", add: true,
			items: cat(handoff, it(vT4, rListener, nTCP, a4, itemNSHere), it(vUDP, rPacket, nUDP, aUDP, itemNSHere),
				it(vNull, rFile, nFlag2, aDevNull, nsNoKey), it(vT6, rListener, nTCP6, a6, itemNSHere), it(vUnix, rListener, nUnix, aUnix, itemNSHere),
				it(vNull, rNamed, nEmpty, aName, nsNoKey)),
			asks: cat(ask(askListen, nTCP, a4, 0), ask(askPacket, nUDP, aUDP, 0), ask(askFile, 0, aDevNull, flagRDWR),
				ask(askListen, nTCP6, a6, 0), ask(askListen, nUnix, aUnix, 0), ask(askNamed, 0, aName, 0))},
		{name: "asked-twice", items: cat(handoff, it(vT4, rListener, nTCP, a4, itemNSHere)),
			asks: cat(ask(askListen, nTCP, a4, 0), ask(askListen, nTCP, a4, 0))},
		{name: "no-netns-key", items: cat(handoff, it(vT4, rListener, nTCP, a4, nsNoKey)), asks: ask(askListen, nTCP, a4, 0)},
		{name: "netns-other", items: cat(handoff, it(vT4, rListener, nTCP, a4, itemNSOther)), asks: cat(ask(askListen, nTCP, a4, 0), ask(askListen, nTCP, a4, askOtherNS)), add: true},
		{name: "netns-none-asked-other", items: cat(handoff, it(vT4, rListener, nTCP, a4, nsNoKey)), asks: ask(askListen, nTCP, a4, askOtherNS)},
		{name: "netns-exact-bad-none-good", items: cat(handoff, it(vT4Any, rListener, nTCP, a4, itemNSHere), it(vT4, rListener, nTCP, a4, nsNoKey)),
			asks: ask(askListen, nTCP, a4, 0)},
		{name: "bound-any-labelled-loopback", items: cat(handoff, it(vT4Any, rListener, nTCP4, aLoopback0, itemNSHere)), asks: ask(askListen, nTCP4, aLoopback0, 0)},
		{name: "bound-loopback-labelled-any", items: cat(handoff, it(vT4, rListener, nTCP, aAny4Port, itemNSHere)), asks: ask(askListen, nTCP, aAny4Port, 0)},
		{name: "port-0-label", items: cat(handoff, it(vT4, rListener, nTCP, aLoopback0, itemNSHere)), asks: ask(askListen, nTCP, aLoopback0, 0)},
		{name: "host-name-label", items: cat(handoff, it(vT4, rListener, nTCP, aLocalhost4, itemNSHere), it(vT4, rListener, nTCP, aLocalhost0, itemNSHere)),
			asks: cat(ask(askListen, nTCP, aLocalhost4, 0), ask(askListen, nTCP, aLocalhost0, 0))},
		{name: "service-name-label", items: cat(handoff, it(vT4, rListener, nTCP, aService, itemNSHere)), asks: ask(askListen, nTCP, aService, 0)},
		{name: "mapped-label", items: cat(handoff, it(vT4, rListener, nTCP, aMapped4, itemNSHere)), asks: ask(askListen, nTCP, aMapped4, 0)},
		{name: "junk-label", items: cat(handoff, it(vT4, rListener, nTCP, aJunk, itemNSHere)), asks: ask(askListen, nTCP, aJunk, 0)},
		{name: "v6-labelled-tcp4", items: cat(handoff, it(vTAny, rListener, nTCP4, aAnyPort, itemNSHere)), asks: ask(askListen, nTCP4, aAnyPort, 0)},
		{name: "v6-any-labelled-tcp", items: cat(handoff, it(vTAny, rListener, nTCP, aAnyPort, itemNSHere), it(vTAny, rListener, nTCP6, aV6AnyPort, itemNSHere)),
			asks: cat(ask(askListen, nTCP, aAnyPort, 0), ask(askListen, nTCP6, aV6AnyPort, 0))},
		{name: "v4-labelled-tcp6", items: cat(handoff, it(vT4Any, rListener, nTCP6, aAny4Any, itemNSHere)), asks: ask(askListen, nTCP6, aAny4Any, 0)},
		{name: "packet-labelled-unix", items: cat(handoff, it(vPacket, rListener, nUnix, aPacket, itemNSHere)), asks: ask(askListen, nUnix, aPacket, 0)},
		{name: "stream-labelled-unixpacket", items: cat(handoff, it(vUnix, rListener, nUnixpacket, aUnix, itemNSHere)), asks: ask(askListen, nUnixpacket, aUnix, 0)},
		{name: "unix-path-mismatch", items: cat(handoff, it(vUnix, rListener, nUnix, aPacket, itemNSHere)), asks: ask(askListen, nUnix, aPacket, 0)},
		{name: "udp-labelled-listener", items: cat(handoff, it(vUDP, rListener, nTCP, aUDP, itemNSHere)), asks: ask(askListen, nTCP, aUDP, 0)},
		{name: "listener-labelled-packet", items: cat(handoff, it(vT4, rPacket, nUDP, a4, itemNSHere)), asks: ask(askPacket, nUDP, a4, 0)},
		{name: "gram", items: cat(handoff, it(vGram, rPacket, nUnixgram, aGram, itemNSHere)), asks: ask(askPacket, nUnixgram, aGram, 0)},
		{name: "udp6-labelled", items: cat(handoff, it(vUDP, rPacket, nUDP6, aUDP, itemNSHere)), asks: ask(askPacket, nUDP6, aUDP, 0)},
		{name: "conn-labelled-listener", items: cat(handoff, it(vConn, rListener, nTCP, a4, itemNSHere)), asks: ask(askListen, nTCP, a4, 0)},
		{name: "file-flags", items: cat(handoff, it(vNull, rFile, nFlag0, aDevNull, nsNoKey), it(vNull, rFile, nFlagAppend, aDevNull, nsNoKey)),
			asks: cat(ask(askFile, 0, aDevNull, flagRDWR), ask(askFile, 0, aDevNull, flagRDONLY), ask(askFile, 0, aDevNull, flagAppend))},
		{name: "file-with-netns", items: cat(handoff, it(vNull, rFile, nFlag0, aDevNull, itemNSHere)), asks: ask(askFile, 0, aDevNull, flagRDONLY)},
		{name: "socket-labelled-file", items: cat(handoff, it(vT4, rFile, nFlag0, aDevNull, nsNoKey)), asks: ask(askFile, 0, aDevNull, flagRDONLY)},
		{name: "named-any-kind", items: cat(handoff, it(vT4, rNamed, nEmpty, aName, nsNoKey), it(vNull, rNamed, nTCP, aName, nsNoKey)),
			asks: cat(ask(askNamed, 0, aName, 0), ask(askNamed, 0, aName, 0))},
		{name: "roles-unknown", items: cat(handoff, it(vT4, rConn, nTCP, a4, itemNSHere), it(vT4, rEmpty, nTCP, a4, itemNSHere), it(vT4, rCaps, nTCP, a4, itemNSHere)),
			asks: ask(askListen, nTCP, a4, 0)},
		{name: "extra-meta", items: cat(handoff, it(vT4, rListener, nTCP, a4, itemNSHere|nsExtraMeta)), asks: ask(askListen, nTCP, a4, 0)},
		{name: "listen-unsupported-network", items: cat(handoff, it(vUDP, rListener, nUDP, aUDP, itemNSHere)), asks: ask(askListen, nUDP, aUDP, 0)},
		{name: "handoff-only", items: handoff, add: true},
		{name: "handoff-extra-meta", items: it(vPacket, rHandoff, nUnixpacket, aPacket, nsExtraMeta)},
		{name: "no-handoff", items: it(vT4, rListener, nTCP, a4, itemNSHere)},
		{name: "two-handoffs", items: cat(handoff, handoff)},
		{name: "handoff-of-wrong-kind", items: it(vT4, rHandoff, nTCP, a4, itemNSHere)},
		{name: "handoff-stream-listener", items: it(vUnix, rHandoff, nUnix, aUnix, nsNoKey)},
		{name: "empty", items: nil},
	}
}

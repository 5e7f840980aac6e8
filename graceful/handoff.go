package graceful

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/graceful/systemd"
	"github.com/fdpass/fdpass/kinds"
	"github.com/fdpass/fdpass/unixmsg"
	"github.com/vishvananda/netns"
)

// Options configure a Process. The zero value of each field means its
// default; only Path is required.
type Options struct {
	// Path is the handoff socket: a file system path, or "@name" for a
	// Linux abstract socket. Every generation of a service uses the same
	// path.
	Path string
	// Mode is the permission of the socket file. If zero, 0600.
	Mode os.FileMode
	// Timeout bounds a handoff: the successor has this long from the
	// predecessor's accepting it to its READY, and each side waits at most
	// this long for the other. If zero, 30 seconds.
	Timeout time.Duration
	// Authorize decides whether a peer on the handoff socket may take part:
	// a successor asking for this process's descriptors, or a predecessor
	// offering its own. If nil, the peer must run with this process's uid.
	Authorize func(Peer) error
	// Logger receives the Process's reports of handoffs, refusals and
	// rollbacks. If nil, the Process is silent.
	Logger *slog.Logger
	// Migrate turns on live migration (see Conn): as a successor, the
	// process takes the predecessor's tracked connections before DONE;
	// as a predecessor, it hands over those it tracks. Both sides must
	// set it.
	Migrate bool
	// QuiesceTimeout bounds how long a predecessor waits for the readers
	// of its tracked connections to reach Handoff, counted from READY;
	// the latecomers stay. When the batches stream (FeatureStreamConns),
	// readers are interrupted a batch or two ahead of the sending, so a
	// slow successor leaves the last ones less of it. If zero, 5 seconds
	// or half of Timeout, whichever is less.
	QuiesceTimeout time.Duration
	// Migrated, if set, is called in a successor with the migrated
	// connections before it acknowledges them; an error refuses them and
	// fails the handoff (the predecessor keeps serving everything). Do
	// not read or write the connections in it.
	Migrated func([]*Conn) error
}

const (
	defaultMode    = 0o600
	defaultTimeout = 30 * time.Second
)

// Role says which side of a handoff a peer plays.
type Role uint8

// Roles.
const (
	// RoleSuccessor: the peer asks for this process's descriptors.
	RoleSuccessor Role = 1
	// RolePredecessor: the peer offers its descriptors to this process.
	RolePredecessor Role = 2
)

func (r Role) String() string {
	switch r {
	case RoleSuccessor:
		return "successor"
	case RolePredecessor:
		return "predecessor"
	}
	return "role(" + strconv.Itoa(int(r)) + ")"
}

// Peer is the process at the other end of the handoff socket, as the kernel
// reports it (SO_PEERCRED). For a predecessor the kernel reports the
// process that created the handoff listener, which may be an earlier
// generation than the one answering.
type Peer struct {
	PID      int
	UID, GID uint32
	Role     Role
}

// Item meta keys. The OFFER batch names its items by index; what they are
// travels in meta.
const (
	metaRole    = "role"
	metaNetwork = "network"
	metaAddr    = "addr"
	metaNetNS   = "netns"

	roleHandoff  = "handoff"
	roleListener = "listener"
	rolePacket   = "packet"
	roleFile     = "file"
)

// Process is one generation of a restartable service: it holds what it
// inherited from its predecessor and what it hands to its successor. Its
// methods are safe for concurrent use.
type Process struct {
	opts Options
	log  *slog.Logger
	exit chan struct{}

	mu        sync.Mutex
	gen       uint64
	inherited bool
	ready     bool
	closed    bool
	handedOff bool
	owner     bool // the socket path is this generation's to remove
	exited    bool
	in        *unixmsg.Batch     // the predecessor's OFFER, until Ready
	avail     map[matchKey][]int // untaken items of in
	vals      map[int]any        // items of in converted ahead, until taken
	pred      *unixmsg.Conn      // to the predecessor, until Ready
	ln        *net.UnixListener  // the handoff listener
	regs      []registration     // what goes to the successor
	out       *unixmsg.Batch     // regs[:outN] as a batch, built lazily
	outN      int                //
	cur       *net.UnixConn      // the handoff in progress
	mig       migration          // live migration (migrate.go)
	ns        string             // the network namespace New ran in
	sd        *systemd.Set       // descriptors systemd passed, until Ready
	notify    *systemd.Notifier  // nil outside systemd
	serving   chan struct{}      // closed when the serve loop ends
	refusing  sync.WaitGroup     // refusals in progress
}

type registration struct {
	v    any
	meta unixmsg.Meta
}

type matchKey struct {
	role, network, addr, netns string
}

// New starts this process's generation on the handoff socket at
// opts.Path. If a predecessor answers there, New receives its descriptors
// (after checking its credentials) and turns the listeners and packet
// sockets among them into Go values, all at once; Listen, ListenPacket and
// OpenFile then adopt them, and Ready completes the handoff. If nobody answers (no socket,
// or a socket file left by a dead process) New creates the socket; it
// starts serving successors at Ready.
//
// A live socket whose owner does not hand off is ErrAlreadyRunning; a
// predecessor that refuses is a *HandoffError matching ErrRefused. New
// never removes a live socket or a file that is not a socket.
func New(opts Options) (*Process, error) {
	if !supported {
		return nil, ErrUnsupported
	}
	if opts.Path == "" {
		return nil, errors.New("graceful: Options.Path is empty")
	}
	if opts.Mode == 0 {
		opts.Mode = defaultMode
	}
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	p := &Process{opts: opts, log: opts.Logger, exit: make(chan struct{})}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.log = p.log.With(slog.String("handoff", opts.Path))
	// Listen matches sockets against this namespace: asking the kernel
	// for the calling thread's on every call costs more than adopting
	// the socket (a path lookup in /proc), and a process that serves
	// another namespace says so with ListenInNetNS.
	p.ns = currentNetNS()
	if err := p.initSystemd(); err != nil {
		return nil, err
	}
	q, err := p.start()
	if err != nil {
		p.systemdStopping(true)
		return nil, err
	}
	return q, nil
}

// start finds the predecessor, or creates the handoff socket.
func (p *Process) start() (*Process, error) {
	opts := p.opts
	deadline := time.Now().Add(opts.Timeout)
	var last error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if attempt > maxAttempts || time.Now().After(deadline) {
				return nil, fmt.Errorf("%w: %w", ErrAlreadyRunning, last)
			}
			// The socket changed hands under us (a predecessor shutting
			// down, a racing start): look again shortly.
			time.Sleep(time.Duration(attempt) * 10 * time.Millisecond)
		}
		uc, err := dialHandoff(opts.Path)
		if err == nil {
			err = p.inherit(uc, deadline)
			if err == nil {
				return p, nil
			}
			if !errors.Is(err, errRetry) {
				return nil, err
			}
			last = err
			continue
		}
		var ln *net.UnixListener
		switch state, cerr := classifyDial(opts.Path, err); state {
		case pathAbsent:
			ln, err = listenHandoff(opts.Path, opts.Mode, false)
		case pathStale:
			p.log.Info("graceful: replacing stale handoff socket")
			ln, err = listenHandoff(opts.Path, opts.Mode, true)
		default:
			return nil, cerr
		}
		if errors.Is(err, errRetry) {
			last = err
			continue
		}
		if err != nil {
			return nil, err
		}
		p.ln = ln
		p.gen = 1
		p.owner = true
		p.register(ln, roleHandoff, "unixpacket", opts.Path, "")
		p.log.Info("graceful: created handoff socket", slog.Uint64("generation", p.gen))
		return p, nil
	}
}

const maxAttempts = 5

// errRetry marks a failure that looking again at the socket may cure.
var errRetry = errors.New("graceful: handoff socket changed hands")

// inherit performs the successor's side of a handoff up to the OFFER. It
// takes ownership of uc.
func (p *Process) inherit(uc *net.UnixConn, deadline time.Time) error {
	uc.SetDeadline(deadline)
	peer, err := peerCredentials(uc)
	if err == nil {
		peer.Role = RolePredecessor
		err = p.authorize(peer)
	}
	if err != nil {
		uc.Close()
		return err
	}
	c, err := unixmsg.NewConn(uc, &unixmsg.Options{NoAck: true})
	if err != nil {
		uc.Close()
		return err
	}
	in, gen, err := p.hello(c)
	if err != nil {
		c.Close()
		if isDisconnect(err) {
			return fmt.Errorf("%w: %w", errRetry, err)
		}
		if errors.Is(err, unixmsg.ErrBadMagic) || errors.Is(err, ErrBadMagic) {
			return fmt.Errorf("%w: %w", ErrAlreadyRunning, err)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("%w: no handoff within %v: %w", ErrAlreadyRunning, p.opts.Timeout, err)
		}
		return err
	}
	uc.SetDeadline(time.Time{})
	p.gen = gen
	p.in = in
	p.pred = c
	p.inherited = true
	p.log.Info("graceful: received descriptors from predecessor",
		slog.Int("pid", peer.PID), slog.Int("descriptors", in.Len()), slog.Uint64("generation", p.gen))
	return nil
}

// hello sends HELLO and receives the OFFER. On success the handoff
// listener is p.ln, and the rest of the batch is indexed in p.avail.
func (p *Process) hello(c *unixmsg.Conn) (*unixmsg.Batch, uint64, error) {
	if err := sendMessage(context.Background(), c, Message{Type: MsgHello, MinVersion: MessageVersion, MaxVersion: MessageVersion, Features: p.features()}); err != nil {
		return nil, 0, err
	}
	in, err := c.Receive()
	if err != nil {
		return nil, 0, err
	}
	m, err := ParseMessage(in.Payload())
	if err == nil {
		switch {
		case m.Type == MsgError:
			err = &HandoffError{Code: m.Code, Reason: m.Reason}
		case m.Type != MsgOffer:
			err = errf(ErrMalformed, "%s where OFFER was due", m.Type)
		case m.Version != MessageVersion:
			err = errf(ErrVersion, "predecessor chose version %d", m.Version)
		case int(m.Items) != in.Len():
			err = errf(ErrMalformed, "OFFER announces %d descriptors, %d arrived", m.Items, in.Len())
		}
	}
	if err == nil {
		err = p.index(in)
	}
	if err != nil {
		in.Close()
		return nil, 0, err
	}
	p.mig.agreed = m.Features&p.features()&FeatureMigrate != 0
	p.mig.stream = p.mig.agreed && m.Features&p.features()&FeatureStreamConns != 0
	return in, m.Generation + 1, nil
}

// index finds the handoff listener in the OFFER, takes it, and indexes the
// other items by what they are.
func (p *Process) index(in *unixmsg.Batch) error {
	p.avail = make(map[matchKey][]int, in.Len())
	handoff := -1
	for i, it := range in.Items() {
		k := matchKey{
			role:    it.Meta.Value(metaRole),
			network: it.Meta.Value(metaNetwork),
			addr:    it.Meta.Value(metaAddr),
			netns:   it.Meta.Value(metaNetNS),
		}
		if k.role == roleHandoff {
			if handoff >= 0 || it.Kind != kinds.UnixListener {
				return errf(ErrMalformed, "OFFER item %d: bad handoff listener (%s)", i, it.Kind)
			}
			handoff = i
			continue
		}
		p.avail[k] = append(p.avail[k], i)
	}
	if handoff < 0 {
		return errf(ErrMalformed, "OFFER without a handoff listener")
	}
	f, err := in.TakeFDAt(handoff)
	if err != nil {
		return err
	}
	ln, err := kinds.ToListener(f)
	if err != nil {
		return err
	}
	uln, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		return errf(ErrMalformed, "handoff listener is a %T", ln)
	}
	uln.SetUnlinkOnClose(false)
	if err := p.convert(in); err != nil {
		uln.Close()
		return err
	}
	p.ln = uln
	p.register(uln, roleHandoff, "unixpacket", p.opts.Path, "")
	return nil
}

// convert turns the inherited listeners and packet sockets into Go values
// now, all together and in parallel (kinds.ToValues), rather than one by
// one as Listen asks: a socket costs about ten system calls to convert,
// most of a handoff's time when there are many.
func (p *Process) convert(in *unixmsg.Batch) error {
	var (
		idx []int
		fds []int
		ks  []kinds.Kind
	)
	for i, it := range in.Items() {
		if in.Taken(i) {
			continue
		}
		switch role := it.Meta.Value(metaRole); {
		case role == roleListener && (it.Kind == kinds.TCPListener || it.Kind == kinds.UnixListener),
			role == rolePacket && (it.Kind == kinds.UDP || it.Kind == kinds.UnixDatagram):
		default:
			continue
		}
		f, err := in.TakeFDAt(i)
		if err != nil {
			fd.CloseAll(fds)
			return err
		}
		idx, fds, ks = append(idx, i), append(fds, f), append(ks, it.Kind)
	}
	vals, err := kinds.ToValues(fds, ks, nil)
	if err != nil {
		return err
	}
	p.vals = make(map[int]any, len(vals))
	for j, v := range vals {
		p.vals[idx[j]] = v
	}
	return nil
}

// closeVals closes the values converted ahead that nobody took.
func closeVals(vals map[int]any) {
	for _, v := range vals {
		if c, ok := v.(io.Closer); ok {
			c.Close()
		}
	}
}

func (p *Process) authorize(peer Peer) error {
	if p.opts.Authorize != nil {
		if err := p.opts.Authorize(peer); err != nil {
			if errors.Is(err, ErrUnauthorized) {
				return err
			}
			return fmt.Errorf("%w: %s pid %d uid %d: %w", ErrUnauthorized, peer.Role, peer.PID, peer.UID, err)
		}
		return nil
	}
	if uid := uint32(os.Getuid()); peer.UID != uid {
		return fmt.Errorf("%w: %s pid %d runs as uid %d, not %d", ErrUnauthorized, peer.Role, peer.PID, peer.UID, uid)
	}
	return nil
}

func isDisconnect(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, unixmsg.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func sendMessage(ctx context.Context, c *unixmsg.Conn, m Message) error {
	b, err := AppendMessage(nil, m)
	if err != nil {
		return err
	}
	var batch unixmsg.Batch
	batch.SetPayload(b)
	return c.SendContext(ctx, &batch)
}

// receiveMessage receives a batch that carries no descriptors and parses
// its control message.
func receiveMessage(c *unixmsg.Conn) (Message, error) {
	b, err := c.Receive()
	if err != nil {
		return Message{}, err
	}
	defer b.Close()
	m, err := ParseMessage(b.Payload())
	if err != nil {
		return Message{}, err
	}
	if b.Len() > 0 {
		return Message{}, errf(ErrMalformed, "%s with %d descriptors", m.Type, b.Len())
	}
	return m, nil
}

// Generation returns the process's generation: 1 for a process that
// created the handoff socket, its predecessor's plus one otherwise.
func (p *Process) Generation() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen
}

// Inherited reports whether the process received descriptors from a
// predecessor.
func (p *Process) Inherited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inherited
}

// Listen returns a listener on network ("tcp", "tcp4", "tcp6", "unix" or
// "unixpacket") and addr: inherited from the predecessor when it handed
// over one with the same network, address (as given to Listen, not as
// resolved) and network namespace (the one New ran in; see ListenInNetNS
// for another), which has not been adopted yet; or one systemd passed
// (socket activation, the descriptor store) with the same kind and
// address; otherwise a new one. Calls after Ready always
// create.
//
// The listener is the caller's. From Ready on, the Process holds a
// duplicate of its descriptor to hand to the successor, so closing the
// listener then does not take it out of the handoff (closing it before
// Ready does). Unix listeners never
// remove their socket file on Close, since a successor may be serving on
// it; a stale file left at addr is replaced.
func (p *Process) Listen(network, addr string) (net.Listener, error) {
	return p.listen(p.ns, network, addr, func() (net.Listener, error) {
		return listenReplacing(network, addr)
	})
}

// ListenInNetNS is Listen for a socket in the network namespace h rather
// than the one the Process was created in: it inherits a listener the
// predecessor made in that namespace, or creates one there (see
// kinds.InNetNS; entering a namespace needs CAP_SYS_ADMIN). h stays the
// caller's.
func (p *Process) ListenInNetNS(h netns.NsHandle, network, addr string) (net.Listener, error) {
	id, err := fd.Identify(int(h))
	if err != nil {
		return nil, err
	}
	return p.listen(id.String(), network, addr, func() (ln net.Listener, err error) {
		err = kinds.InNetNS(h, func() error {
			ln, err = listenReplacing(network, addr)
			return err
		})
		return ln, err
	})
}

func (p *Process) listen(ns, network, addr string, create func() (net.Listener, error)) (net.Listener, error) {
	var want kinds.Kind
	switch network {
	case "tcp", "tcp4", "tcp6":
		want = kinds.TCPListener
	case "unix", "unixpacket":
		want = kinds.UnixListener
	default:
		return nil, fmt.Errorf("%w: Listen %q", ErrNetwork, network)
	}
	v, f, ok, err := p.take(matchKey{roleListener, network, addr, ns}, want)
	if err != nil {
		return nil, err
	}
	if !ok && ns == p.ns {
		f, ok = p.fromSystemd(want, network, addr)
	}
	var ln net.Listener
	switch {
	case v != nil:
		ln = v.(net.Listener)
	case ok:
		if ln, err = kinds.ToListener(f); err != nil {
			return nil, err
		}
	default:
		if ln, err = create(); err != nil {
			return nil, err
		}
		ns = socketNetNS(ln, ns)
	}
	if u, isUnix := ln.(*net.UnixListener); isUnix {
		u.SetUnlinkOnClose(false)
	}
	p.register(ln, roleListener, network, addr, ns)
	p.log.Debug("graceful: listening", slog.String("network", network), slog.String("addr", addr), slog.Bool("inherited", ok))
	return ln, nil
}

// ListenPacket returns a packet socket on network ("udp", "udp4", "udp6"
// or "unixgram") and addr, inherited or created as Listen does. The
// socket is the caller's; the Process duplicates it for the successor, as
// Listen does.
func (p *Process) ListenPacket(network, addr string) (net.PacketConn, error) {
	var want kinds.Kind
	switch network {
	case "udp", "udp4", "udp6":
		want = kinds.UDP
	case "unixgram":
		want = kinds.UnixDatagram
	default:
		return nil, fmt.Errorf("%w: ListenPacket %q", ErrNetwork, network)
	}
	ns := p.ns
	v, f, ok, err := p.take(matchKey{rolePacket, network, addr, ns}, want)
	if err != nil {
		return nil, err
	}
	if !ok {
		f, ok = p.fromSystemd(want, network, addr)
	}
	var pc net.PacketConn
	switch {
	case v != nil:
		pc = v.(net.PacketConn)
	case ok:
		if pc, err = kinds.ToPacketConn(f); err != nil {
			return nil, err
		}
	default:
		if pc, err = net.ListenPacket(network, addr); err != nil {
			return nil, err
		}
		ns = socketNetNS(pc, ns)
	}
	p.register(pc, rolePacket, network, addr, ns)
	return pc, nil
}

// OpenFile returns the file name opened with flag, as os.OpenFile does:
// inherited when the predecessor handed over the same name opened with the
// same access mode and O_APPEND, otherwise opened now (with perm, if it is
// created). An inherited file shares its offset and status flags with the
// predecessor's. The file is the caller's; the Process duplicates it for
// the successor, as Listen does.
func (p *Process) OpenFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	mode := "flag=" + strconv.Itoa(flag&(os.O_RDONLY|os.O_WRONLY|os.O_RDWR|os.O_APPEND))
	_, f, ok, err := p.take(matchKey{roleFile, mode, name, ""}, kinds.File)
	if err != nil {
		return nil, err
	}
	var file *os.File
	if ok {
		file = kinds.ToFile(f, name)
	} else if file, err = os.OpenFile(name, flag, perm); err != nil {
		return nil, err
	}
	p.register(file, roleFile, mode, name, "")
	return file, nil
}

// take takes the first untaken inherited item under k, if it is of kind
// want: as the value converted ahead, or else as its descriptor.
func (p *Process) take(k matchKey, want kinds.Kind) (any, int, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, -1, false, net.ErrClosed
	}
	if p.in == nil {
		return nil, -1, false, nil
	}
	if len(p.avail[k]) == 0 {
		// A predecessor that did not say a socket's namespace: any.
		k.netns = ""
	}
	for idx := p.avail[k]; len(idx) > 0; idx = p.avail[k] {
		i := idx[0]
		p.avail[k] = idx[1:]
		if got := p.in.Item(i).Kind; got != want {
			p.log.Warn("graceful: inherited descriptor of the wrong kind left unused",
				slog.String("addr", k.addr), slog.String("kind", got.String()), slog.String("want", want.String()))
			continue
		}
		if v, ok := p.vals[i]; ok {
			delete(p.vals, i)
			return v, -1, true, nil
		}
		f, err := p.in.TakeFDAt(i)
		return nil, f, err == nil, err
	}
	return nil, -1, false, nil
}

func (p *Process) register(v any, role, network, addr, ns string) {
	meta := unixmsg.Meta{
		{Key: metaRole, Value: role},
		{Key: metaNetwork, Value: network},
		{Key: metaAddr, Value: addr},
	}
	if ns != "" {
		meta = append(meta, unixmsg.KV{Key: metaNetNS, Value: ns})
	}
	p.mu.Lock()
	p.regs = append(p.regs, registration{v: v, meta: meta})
	p.mu.Unlock()
}

// prepare returns the batch of everything registered, adding what was
// registered since the last call. The batch holds duplicates, built before
// a successor asks so that the handoff itself costs little.
func (p *Process) prepare() (*unixmsg.Batch, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, net.ErrClosed
	}
	if p.out == nil {
		p.out = new(unixmsg.Batch)
	}
	for ; p.outN < len(p.regs); p.outN++ {
		r := p.regs[p.outN]
		if err := p.out.Add(strconv.Itoa(p.out.Len()), r.v, r.meta, nil); err != nil {
			// Closed by its owner before it could be duplicated: it is
			// not handed over.
			p.log.Warn("graceful: descriptor left out of the handoff",
				slog.String("addr", r.meta.Value(metaAddr)), slog.Any("error", err))
		}
	}
	return p.out, nil
}

// Ready completes this generation's start. It closes the inherited
// descriptors that Listen, ListenPacket and OpenFile did not adopt; if there
// is a predecessor, it says READY and waits for DONE, after which the
// predecessor stops serving (its Exit channel closes). Then the process
// serves the handoff socket for its own successor.
//
// Call Ready once everything is listening, within the predecessor's
// Options.Timeout of New. If it fails with a predecessor, the handoff has
// failed and the predecessor keeps serving: Close the Process and exit.
func (p *Process) Ready() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return net.ErrClosed
	}
	if p.ready {
		p.mu.Unlock()
		return ErrReady
	}
	p.ready = true
	in, pred, vals := p.in, p.pred, p.vals
	p.in, p.avail, p.pred, p.vals = nil, nil, nil, nil
	p.mu.Unlock()
	if in != nil {
		unused := len(vals)
		for i := range in.Len() {
			if !in.Taken(i) {
				unused++
			}
		}
		in.Close()
		closeVals(vals)
		if unused > 0 {
			p.log.Info("graceful: closed unused inherited descriptors", slog.Int("count", unused))
		}
	}
	if pred != nil {
		err := p.confirm(pred)
		pred.Close()
		if err != nil {
			p.log.Error("graceful: handoff failed at READY", slog.Any("error", err))
			return fmt.Errorf("%w: %w", ErrHandoff, err)
		}
		p.log.Info("graceful: predecessor stopped; this generation serves", slog.Uint64("generation", p.Generation()))
	}
	p.systemdReady()
	p.mu.Lock()
	p.owner = true
	defer p.mu.Unlock()
	if p.closed {
		return net.ErrClosed
	}
	p.serving = make(chan struct{})
	go p.serve(p.serving)
	return nil
}

// confirm sends READY and waits for DONE.
func (p *Process) confirm(c *unixmsg.Conn) error {
	c.SetDeadline(time.Now().Add(p.opts.Timeout))
	var ask uint32
	if p.mig.agreed {
		ask = FeatureMigrate
	}
	if p.mig.stream {
		ask |= FeatureStreamConns
	}
	if err := sendMessage(context.Background(), c, Message{Type: MsgReady, Features: ask}); err != nil {
		return err
	}
	var conns []*Conn
	if ask != 0 {
		var err error
		if conns, err = p.migrateIn(c); err != nil {
			return err
		}
	}
	m, err := receiveMessage(c)
	if err == nil && m.Type == MsgDone {
		p.adopted(conns)
		return nil
	}
	for _, mc := range conns {
		mc.Conn.Close()
	}
	if err != nil {
		return err
	}
	switch m.Type {
	case MsgError:
		return &HandoffError{Code: m.Code, Reason: m.Reason}
	}
	return errf(ErrMalformed, "%s where DONE was due", m.Type)
}

// Exit returns a channel that is closed when a successor has taken over
// (this process received READY and answered DONE), and also when the
// Process is closed. Then stop accepting on the listeners, drain, and
// exit.
func (p *Process) Exit() <-chan struct{} { return p.exit }

// HandedOff reports whether a successor has taken over.
func (p *Process) HandedOff() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.handedOff
}

func (p *Process) closeExit() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.exited {
		p.exited = true
		close(p.exit)
	}
}

// Close stops serving the handoff socket, aborts a handoff in progress
// (the predecessor keeps serving), and closes every descriptor the Process
// holds: its duplicates and the inherited descriptors not adopted. The
// listeners, packet sockets and files returned to the caller stay open. If
// this process served the socket and no successor took over, the socket
// file is removed. Exit's channel closes.
func (p *Process) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	in, pred, ln, cur, serving, vals := p.in, p.pred, p.ln, p.cur, p.serving, p.vals
	p.in, p.avail, p.pred, p.ln, p.vals = nil, nil, nil, nil, nil
	p.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	if cur != nil {
		cur.Close()
	}
	if serving != nil {
		<-serving
	}
	p.refusing.Wait()
	if in != nil {
		in.Close()
	}
	closeVals(vals)
	if pred != nil {
		pred.Close()
	}
	p.mu.Lock()
	out, handedOff, owner := p.out, p.handedOff, p.owner
	p.out, p.regs = nil, nil
	p.mu.Unlock()
	if out != nil {
		out.Close()
	}
	if owner && !handedOff && ln != nil {
		removeSocketFile(p.opts.Path)
	}
	p.systemdStopping(handedOff)
	p.closeExit()
	return nil
}

// serve answers successors, one at a time, until one takes over or the
// Process closes.
func (p *Process) serve(done chan struct{}) {
	defer close(done)
	// Duplicate what the next successor will get before it asks, so that
	// its handoff costs it little; it waits in the backlog meanwhile.
	if _, err := p.prepare(); err != nil {
		return
	}
	p.mu.Lock()
	ln := p.ln
	p.mu.Unlock()
	if ln == nil {
		return
	}
	for {
		uc, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			p.log.Warn("graceful: accept on handoff socket", slog.Any("error", err))
			// EMFILE and the like: wait for descriptors to free up.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if p.handoff(uc) {
			return
		}
	}
}

// handoff serves one successor and reports whether it took over. It takes
// ownership of uc.
func (p *Process) handoff(uc *net.UnixConn) bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		uc.Close()
		return false
	}
	p.cur = uc
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.cur = nil
		p.mu.Unlock()
	}()
	start := time.Now()
	uc.SetDeadline(start.Add(p.opts.Timeout))
	peer, err := peerCredentials(uc)
	if err == nil {
		peer.Role = RoleSuccessor
		err = p.authorize(peer)
	}
	log := p.log.With(slog.Int("pid", peer.PID), slog.Uint64("uid", uint64(peer.UID)))
	if err != nil {
		log.Warn("graceful: refused successor", slog.Any("error", err))
		// Not in turn: a refused peer must not hold up the next one.
		p.refusing.Go(func() { refuse(uc, CodeUnauthorized, err.Error()) })
		return false
	}
	p.systemdHandoff()
	defer func() {
		if !p.HandedOff() {
			p.systemdRollback()
		}
	}()
	c, err := unixmsg.NewConn(uc, nil)
	if err != nil {
		uc.Close()
		log.Warn("graceful: handoff connection", slog.Any("error", err))
		return false
	}
	keep := false
	defer func() {
		if !keep {
			c.Close()
		}
	}()
	err = p.offer(c, log, peer.PID)
	if err == errNoHello {
		// A health check, most likely: nothing to roll back.
		log.Debug("graceful: peer hung up before HELLO")
		return false
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Tell a successor that is merely slow why it lost, out of
			// turn: the next successor need not wait for it.
			keep = true
			reason := fmt.Sprintf("handoff not finished within %v", p.opts.Timeout)
			p.refusing.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(refuseLinger))
				sendError(c, CodeTimeout, reason)
				linger(c)
			})
		}
		log.Warn("graceful: handoff rolled back; still serving", slog.Any("error", err), slog.Duration("after", time.Since(start)))
		return false
	}
	p.mu.Lock()
	p.handedOff = true
	ln, out := p.ln, p.out
	p.ln, p.out, p.regs = nil, nil, nil
	p.mu.Unlock()
	// The successor holds its own copies now.
	ln.Close()
	if out != nil {
		out.Close()
	}
	log.Info("graceful: successor took over", slog.Duration("took", time.Since(start)))
	p.closeExit()
	return true
}

// errNoHello: the peer hung up without a word.
var errNoHello = errors.New("graceful: peer hung up before HELLO")

// offer runs the predecessor's side of one handoff, from HELLO to DONE. It
// changes nothing of the Process unless it returns nil.
func (p *Process) offer(c *unixmsg.Conn, log *slog.Logger, pid int) error {
	hello, err := receiveMessage(c)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return errNoHello
		}
		if !isDisconnect(err) && !errors.Is(err, os.ErrDeadlineExceeded) {
			sendError(c, CodeProtocol, err.Error())
		}
		return err
	}
	if hello.Type != MsgHello {
		err := errf(ErrMalformed, "%s where HELLO was due", hello.Type)
		sendError(c, CodeProtocol, err.Error())
		return err
	}
	if hello.MinVersion > MessageVersion || hello.MaxVersion < MessageVersion {
		err := errf(ErrVersion, "successor speaks versions %d-%d, this process %d", hello.MinVersion, hello.MaxVersion, MessageVersion)
		sendError(c, CodeVersion, err.Error())
		return err
	}
	out, err := p.prepare()
	if err != nil {
		sendError(c, CodeAborted, err.Error())
		return err
	}
	p.mu.Lock()
	gen := p.gen
	p.mu.Unlock()
	payload, err := AppendMessage(nil, Message{
		Type:          MsgOffer,
		Version:       MessageVersion,
		Features:      hello.Features & p.features(),
		Generation:    gen,
		Items:         uint32(out.Len()),
		TimeoutMillis: uint32(min(p.opts.Timeout.Milliseconds(), 1<<32-1)),
	})
	if err != nil {
		return err
	}
	out.SetPayload(payload)
	if err := c.Send(out); err != nil {
		return fmt.Errorf("sending descriptors: %w", err)
	}
	log.Debug("graceful: sent descriptors; waiting for READY", slog.Int("descriptors", out.Len()))
	m, err := receiveMessage(c)
	if err != nil {
		return fmt.Errorf("waiting for READY: %w", err)
	}
	switch m.Type {
	case MsgReady:
	case MsgError:
		return &HandoffError{Code: m.Code, Reason: m.Reason}
	default:
		err := errf(ErrMalformed, "%s where READY was due", m.Type)
		sendError(c, CodeProtocol, err.Error())
		return err
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		sendError(c, CodeAborted, "predecessor is closing")
		return net.ErrClosed
	}
	p.systemdTakeover(pid)
	// Live migration, when both asked for it: the connections move now,
	// and stay this process's until DONE is acknowledged.
	var mig *outgoing
	if both := m.Features & hello.Features & p.features(); both&FeatureMigrate != 0 {
		if mig, err = p.migrateOut(c, log, both&FeatureStreamConns != 0); err != nil {
			return err
		}
	}
	// DONE is acknowledged: once Send returns nil the successor has it,
	// and this process may stop.
	// DONE names the second phase that took place, if any.
	done := m.Features & hello.Features & p.features()
	if done&FeatureMigrate == 0 {
		done = 0
	}
	if err := sendMessage(context.Background(), c, Message{Type: MsgDone, Features: done}); err != nil {
		// Hang up before resuming, so that a successor still about to
		// acknowledge DONE fails to, and does not serve them too.
		c.Close()
		mig.resume()
		return fmt.Errorf("sending DONE: %w", err)
	}
	mig.commit()
	return nil
}

// sendError tells the peer why, as far as it listens; it never waits past
// the connection's deadline, which every caller has set. (A context would
// not do: unixmsg clears the deadline after a cancellation.)
func sendError(c *unixmsg.Conn, code ErrorCode, reason string) {
	if len(reason) > MaxReasonLen {
		reason = reason[:MaxReasonLen]
	}
	sendMessage(context.Background(), c, Message{Type: MsgError, Code: code, Reason: reason})
}

// refuse sends ERROR without waiting for an acknowledgement, waits a
// little for the peer to hang up (so that its HELLO, sent meanwhile, does
// not fail before it reads why), and closes uc.
func refuse(uc *net.UnixConn, code ErrorCode, reason string) {
	c, err := unixmsg.NewConn(uc, &unixmsg.Options{NoAck: true})
	if err != nil {
		uc.Close()
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(refuseLinger))
	sendError(c, code, reason)
	linger(c)
}

// linger reads and drops what the peer sends until it hangs up or the
// deadline passes, so that a message it sends meanwhile does not fail
// before it reads an ERROR.
func linger(c *unixmsg.Conn) {
	for {
		b, err := c.Receive()
		if err != nil {
			break
		}
		b.Close()
	}
	// The Conn may be broken (the peer's READY crossed our ERROR): drain
	// the socket itself. Descriptors in what is dropped are closed by the
	// kernel, since no control buffer takes them.
	buf := make([]byte, 512)
	for {
		if _, err := c.UnixConn().Read(buf); err != nil {
			return
		}
	}
}

// refuseLinger bounds how long a refused peer may keep its connection.
const refuseLinger = time.Second

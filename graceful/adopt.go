package graceful

import (
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/internal/handoffmsg"
	"github.com/fdpass/fdpass/kinds"
	"github.com/fdpass/fdpass/unixmsg"
)

// inheritance is what a successor received in the predecessor's OFFER,
// from New until Ready: the items not adopted yet, indexed by what they
// are, the listeners and packet sockets among them converted ahead, and
// the connection to the predecessor.
type inheritance struct {
	batch    *unixmsg.Batch
	avail    map[matchKey][]int // untaken items of batch
	vals     []any              // items of batch converted ahead, by index, until taken
	homes    []nsAnswer         // whether each of vals is in ns
	pred     *unixmsg.Conn      // to the predecessor
	migrate  bool               // both sides want FeatureMigrate
	stream   bool               // and FeatureStreamConns
	late     bool               // and FeatureLateConns
	capacity bool               // and FeatureCapacity
	pid      int                // the predecessor's, as it says (0: it did not)
	ns       ownNetNS           // this process's network namespace
}

// matchKey is what an inherited item is, as its meta says (see
// HANDOFF.md, "OFFER items").
type matchKey struct {
	role, network, addr, netns string
}

// index finds the handoff listener in the OFFER b, takes it as p.ln, and
// indexes the other items by what they are. On error b is the caller's to
// close.
func (p *Process) index(b *unixmsg.Batch, own ownNetNS) (*inheritance, error) {
	in := &inheritance{batch: b, avail: make(map[matchKey][]int, b.Len()), ns: own}
	handoff := -1
	for i, it := range b.Items() {
		k := matchKey{
			role:    it.Meta.Value(handoffmsg.MetaRole),
			network: it.Meta.Value(handoffmsg.MetaNetwork),
			addr:    it.Meta.Value(handoffmsg.MetaAddr),
			netns:   it.Meta.Value(handoffmsg.MetaNetNS),
		}
		if k.role == handoffmsg.RoleHandoff {
			if handoff >= 0 || it.Kind != kinds.UnixListener {
				return nil, handoffmsg.Errf(ErrMalformed, "OFFER item %d: bad handoff listener (%s)", i, it.Kind)
			}
			handoff = i
			in.pid, _ = strconv.Atoi(it.Meta.Value(handoffmsg.MetaPID))
			continue
		}
		in.avail[k] = append(in.avail[k], i)
	}
	if handoff < 0 {
		return nil, handoffmsg.Errf(ErrMalformed, "OFFER without a handoff listener")
	}
	f, err := b.TakeFDAt(handoff)
	if err != nil {
		return nil, err
	}
	ln, err := kinds.ToListener(f)
	if err != nil {
		return nil, err
	}
	uln, ok := ln.(*net.UnixListener)
	if !ok || uln.Addr().Network() != "unixpacket" {
		ln.Close()
		return nil, handoffmsg.Errf(ErrMalformed, "handoff listener is a %T on %s", ln, ln.Addr().Network())
	}
	uln.SetUnlinkOnClose(false)
	if err := in.convert(); err != nil {
		uln.Close()
		return nil, err
	}
	p.ln = uln
	// Room for a registration per inherited item, most of which will be
	// adopted, at once rather than doubling as Listen goes.
	p.regs = slices.Grow(p.regs, b.Len())
	p.register(uln, handoffmsg.RoleHandoff, "unixpacket", p.opts.Path, "")
	return in, nil
}

// convert turns the inherited listeners and packet sockets into Go values
// now, all together and in parallel (kinds.ToValues), rather than one by
// one as Listen asks: a socket costs about ten system calls to convert,
// most of a handoff's time when there are many.
func (in *inheritance) convert() error {
	var (
		idx []int
		fds []int
		ks  []kinds.Kind
	)
	for i, it := range in.batch.Items() {
		if in.batch.Taken(i) {
			continue
		}
		switch role := it.Meta.Value(handoffmsg.MetaRole); {
		case role == handoffmsg.RoleListener && (it.Kind == kinds.TCPListener || it.Kind == kinds.UnixListener),
			role == handoffmsg.RolePacket && (it.Kind == kinds.UDP || it.Kind == kinds.UnixDatagram):
		default:
			continue
		}
		f, err := in.batch.TakeFDAt(i)
		if err != nil {
			fd.CloseAll(fds)
			return err
		}
		idx, fds, ks = append(idx, i), append(fds, f), append(ks, it.Kind)
	}
	// Whether each socket is in this process's namespace, read now, on
	// every processor, rather than one by one as Listen asks.
	homes := in.ns.homes(fds)
	// unixmsg checked every kind on receipt.
	vals, err := kinds.ToValuesVerified(fds, ks, nil)
	if err != nil {
		return err
	}
	in.vals = make([]any, in.batch.Len())
	in.homes = make([]nsAnswer, in.batch.Len())
	for j, v := range vals {
		in.vals[idx[j]] = v
		in.homes[idx[j]] = homes[j]
	}
	return nil
}

// take takes the first untaken item under k that is of kind want and,
// for a socket, matches its label: as the value converted ahead, or else
// as its descriptor. Items under k come first, then those the predecessor
// did not say a namespace of (any namespace).
func (in *inheritance) take(k matchKey, want kinds.Kind, log *slog.Logger) (any, int, bool, error) {
	ns := k.netns
	if v, f, ok, err := in.takeUnder(k, ns, want, log); ok || err != nil || ns == "" {
		return v, f, ok, err
	}
	k.netns = ""
	return in.takeUnder(k, ns, want, log)
}

// takeUnder is take with the items under k only; ns is the namespace
// asked for.
func (in *inheritance) takeUnder(k matchKey, ns string, want kinds.Kind, log *slog.Logger) (any, int, bool, error) {
	for idx := in.avail[k]; len(idx) > 0; idx = in.avail[k] {
		i := idx[0]
		in.avail[k] = idx[1:]
		if got := in.batch.Item(i).Kind; got != want {
			log.Warn("graceful: inherited descriptor of the wrong kind left unused",
				slog.String("addr", k.addr), slog.String("kind", got.String()), slog.String("want", want.String()))
			continue
		}
		if v := in.vals[i]; v != nil {
			if err := checkSocket(v, k.network, k.addr, ns, in.ns, in.homes[i]); err != nil {
				// Closed at Ready with what nobody adopted.
				log.Warn("graceful: inherited socket does not match its label; left unused",
					slog.String("addr", k.addr), slog.Any("error", err))
				continue
			}
			in.vals[i] = nil
			return v, -1, true, nil
		}
		f, err := in.batch.TakeFDAt(i)
		return nil, f, err == nil, err
	}
	return nil, -1, false, nil
}

// takeNamed takes the descriptor handed over under name, of any kind.
func (in *inheritance) takeNamed(name string) (int, bool, error) {
	k := matchKey{role: handoffmsg.RoleNamed, addr: name}
	idx := in.avail[k]
	if len(idx) == 0 {
		return -1, false, nil
	}
	in.avail[k] = idx[1:]
	f, err := in.batch.TakeFDAt(idx[0])
	return f, err == nil, err
}

// release closes what was not adopted, and returns how many there were.
// The connection to the predecessor stays open.
func (in *inheritance) release() (unused int) {
	for _, v := range in.vals {
		if v != nil {
			unused++
		}
	}
	for i := range in.batch.Len() {
		if !in.batch.Taken(i) {
			unused++
		}
	}
	in.batch.Close()
	for _, v := range in.vals {
		if c, ok := v.(io.Closer); ok {
			c.Close()
		}
	}
	in.avail, in.vals, in.homes = nil, nil, nil
	return unused
}

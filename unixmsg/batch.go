package unixmsg

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"syscall"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/kinds"
	"github.com/vishvananda/netns"
)

// Batch is a list of items, each with its own descriptor. A sender fills one
// with Add and sends it with Conn.Send; a receiver gets one from
// Conn.Receive and takes the items it wants by name. Either way the batch
// owns its descriptors until they are taken, and Close closes the rest.
//
// The zero Batch is empty and ready to use. A Batch is not safe for
// concurrent use.
type Batch struct {
	payload []byte
	items   []Item
	fds     []int          // -1 once taken or closed
	lent    []bool         // fds[i] is borrowed (AddBorrowed); nil if none is
	files   []string       // the name of the *os.File item i came from, or ""; nil if none did
	index   map[string]int // name to index, or dupName; built on first use
}

// dupName marks, in Batch.index, a name that more than one item carries.
const dupName = -1

// Add appends an item named name holding a duplicate of the descriptor
// behind v, which may be a net.Listener, net.Conn, net.PacketConn, *os.File,
// netns.NsHandle or any syscall.Conn. Its kind is detected from the
// descriptor. The batch keeps meta and payload as they are (it does not copy
// them) until it is sent. The name of an *os.File travels with it, so that
// the receiver's file has the same Name() (see Batch.File); meta keys that
// start with "unixmsg." are reserved for that.
//
// The duplicate belongs to the batch: closing v does not affect the batch,
// and closing the batch does not affect v. Names need not be set, but a name
// that is set must be unique in the batch.
func (b *Batch) Add(name string, v any, meta Meta, payload []byte) error {
	if err := b.checkName(name); err != nil {
		return err
	}
	nfd, info, err := kinds.FromValue(v)
	if err != nil {
		return fmt.Errorf("unixmsg: add %q: %w", name, err)
	}
	b.append(Item{Kind: info.Kind, Name: name, Meta: meta, Payload: payload}, nfd)
	b.noteFile(v)
	return nil
}

// AddBorrowed is Add without the duplicate: the item carries v's own
// descriptor, which the batch never closes. v must stay open, holding the
// same descriptor, until the batch is closed. That saves a dup(2) and a
// close(2) per item, about a fifth of the cost of sending a connection on
// the project's VMs. Taking a borrowed item (TakeFDAt and the like) gives
// a duplicate.
func (b *Batch) AddBorrowed(name string, v syscall.Conn, meta Meta, payload []byte) error {
	if err := b.checkName(name); err != nil {
		return err
	}
	rc, err := v.SyscallConn()
	if err != nil {
		return fmt.Errorf("unixmsg: add %q: %w", name, err)
	}
	nfd := -1
	if err := rc.Control(func(s uintptr) { nfd = int(s) }); err != nil {
		return fmt.Errorf("unixmsg: add %q: %w", name, err)
	}
	k, ok := kinds.ValueKind(v)
	if !ok {
		info, err := kinds.Detect(nfd)
		if err != nil {
			return fmt.Errorf("unixmsg: add %q: %w", name, err)
		}
		k = info.Kind
	}
	if b.lent == nil {
		b.lent = make([]bool, len(b.fds), cap(b.fds))
	}
	b.append(Item{Kind: k, Name: name, Meta: meta, Payload: payload}, nfd)
	b.lent[len(b.lent)-1] = true
	b.noteFile(v)
	return nil
}

// AddFD is Add for a raw descriptor: the batch holds a duplicate of fd, and
// fd stays the caller's.
func (b *Batch) AddFD(name string, rawfd int, meta Meta, payload []byte) error {
	if err := b.checkName(name); err != nil {
		return err
	}
	nfd, err := fd.DupFD(rawfd)
	if err != nil {
		return fmt.Errorf("unixmsg: add %q: %w", name, err)
	}
	info, err := kinds.Detect(nfd)
	if err != nil {
		fd.Close(nfd)
		return fmt.Errorf("unixmsg: add %q: %w", name, err)
	}
	b.append(Item{Kind: info.Kind, Name: name, Meta: meta, Payload: payload}, nfd)
	return nil
}

// Grow makes room for n more items, so that adding them does not grow the
// batch's own slices again and again; on an empty batch it sizes the name
// index too.
func (b *Batch) Grow(n int) {
	if n <= 0 {
		return
	}
	b.items = slices.Grow(b.items, n)
	b.fds = slices.Grow(b.fds, n)
	if b.lent != nil {
		b.lent = slices.Grow(b.lent, n)
	}
	if b.files != nil {
		b.files = slices.Grow(b.files, n)
	}
	if b.index == nil && len(b.items) == 0 {
		b.index = make(map[string]int, n)
	}
}

func (b *Batch) checkName(name string) error {
	if name == "" {
		return nil
	}
	b.buildIndex()
	if _, ok := b.index[name]; ok {
		return fmt.Errorf("%w: %q", ErrDuplicateName, name)
	}
	return nil
}

func (b *Batch) append(it Item, nfd int) {
	b.items = append(b.items, it)
	b.fds = append(b.fds, nfd)
	if b.lent != nil {
		b.lent = append(b.lent, false)
	}
	if b.files != nil {
		b.files = append(b.files, "")
	}
	if it.Name != "" && b.index != nil {
		b.index[it.Name] = len(b.items) - 1
	}
}

func (b *Batch) buildIndex() {
	if b.index != nil {
		return
	}
	b.index = make(map[string]int, len(b.items))
	for i, it := range b.items {
		if it.Name == "" {
			continue
		}
		if _, ok := b.index[it.Name]; ok {
			b.index[it.Name] = dupName
			continue
		}
		b.index[it.Name] = i
	}
}

// SetPayload sets the batch's own payload: application data that travels
// with the batch as a whole (a control message, say), bounded by
// Limits.MaxPayload. The batch keeps p as it is until it is sent.
func (b *Batch) SetPayload(p []byte) { b.payload = p }

// Payload returns the batch's own payload.
func (b *Batch) Payload() []byte { return b.payload }

// Len returns the number of items.
func (b *Batch) Len() int { return len(b.items) }

// Item returns the i-th item's description. Its descriptor stays in the
// batch.
func (b *Batch) Item(i int) Item { return b.items[i] }

// Items returns the descriptions of all items. The slice is the batch's;
// do not modify it.
func (b *Batch) Items() []Item { return b.items }

// Lookup returns the index of the item named name. A name that more than
// one item carries (a peer that broke the rule) is ErrDuplicateName.
func (b *Batch) Lookup(name string) (int, error) {
	b.buildIndex()
	i, ok := b.index[name]
	if !ok || name == "" {
		return -1, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if i == dupName {
		return -1, fmt.Errorf("%w: %q", ErrDuplicateName, name)
	}
	return i, nil
}

// Taken reports whether the i-th item's descriptor has been taken or closed.
func (b *Batch) Taken(i int) bool { return b.fds[i] < 0 }

// TakeFDAt takes the i-th item's raw descriptor out of the batch; it is the
// caller's to close.
func (b *Batch) TakeFDAt(i int) (int, error) {
	if i < 0 || i >= len(b.items) {
		return -1, fmt.Errorf("%w: index %d of %d", ErrNotFound, i, len(b.items))
	}
	f := b.fds[i]
	if f < 0 {
		return -1, fmt.Errorf("%w: %q", ErrTaken, b.items[i].Name)
	}
	if b.lent != nil && b.lent[i] {
		d, err := fd.DupFD(f)
		if err != nil {
			return -1, err
		}
		f = d
	}
	b.fds[i] = -1
	return f, nil
}

// TakeFD takes the raw descriptor of the item named name out of the batch;
// it is the caller's to close.
func (b *Batch) TakeFD(name string) (int, error) {
	i, err := b.Lookup(name)
	if err != nil {
		return -1, err
	}
	return b.TakeFDAt(i)
}

// take takes the named item's descriptor if its kind is one of want.
func (b *Batch) take(name string, what string, want ...kinds.Kind) (int, error) {
	i, err := b.Lookup(name)
	if err != nil {
		return -1, err
	}
	k := b.items[i].Kind
	ok := len(want) == 0
	for _, w := range want {
		ok = ok || k == w
	}
	if !ok {
		return -1, fmt.Errorf("%w: %q is a %s, not a %s", ErrWrongKind, name, k, what)
	}
	return b.TakeFDAt(i)
}

// Listener takes the item named name, a TCP or unix listener, as a
// net.Listener that owns its descriptor. Closing the listener does not
// affect the batch.
func (b *Batch) Listener(name string) (net.Listener, error) {
	f, err := b.take(name, "listener", kinds.TCPListener, kinds.UnixListener)
	if err != nil {
		return nil, err
	}
	return kinds.ToListener(f)
}

// Conn takes the item named name, a connected TCP or unix stream socket, as
// a net.Conn that owns its descriptor.
func (b *Batch) Conn(name string) (net.Conn, error) {
	f, err := b.take(name, "conn", kinds.TCPConn, kinds.UnixConn)
	if err != nil {
		return nil, err
	}
	return kinds.ToConn(f)
}

// PacketConn takes the item named name, a UDP or unix datagram socket, as a
// net.PacketConn that owns its descriptor.
func (b *Batch) PacketConn(name string) (net.PacketConn, error) {
	f, err := b.take(name, "packet conn", kinds.UDP, kinds.UnixDatagram)
	if err != nil {
		return nil, err
	}
	return kinds.ToPacketConn(f)
}

// File takes the item named name, of any kind, as an *os.File that owns its
// descriptor. The file's Name() is the name of the *os.File the sender
// added (the path it opened, say), or else the item's name.
func (b *Batch) File(name string) (*os.File, error) {
	i, err := b.Lookup(name)
	if err != nil {
		return nil, err
	}
	f, err := b.TakeFDAt(i)
	if err != nil {
		return nil, err
	}
	return kinds.ToFile(f, b.fileName(i)), nil
}

// fileName is the name for a file made from item i.
func (b *Batch) fileName(i int) string {
	if b.files != nil && b.files[i] != "" {
		return b.files[i]
	}
	return b.items[i].Name
}

// NsHandle takes the item named name, a network-namespace handle, as a
// netns.NsHandle; the caller closes it.
func (b *Batch) NsHandle(name string) (netns.NsHandle, error) {
	f, err := b.take(name, "network namespace", kinds.NetNS)
	if err != nil {
		return netns.None(), err
	}
	return kinds.ToNsHandle(f)
}

// Close closes every descriptor not taken. It is safe to call more than
// once; the items' descriptions stay readable.
func (b *Batch) Close() error {
	if b.lent != nil {
		for i, l := range b.lent {
			if l {
				b.fds[i] = -1
			}
		}
	}
	err := fd.CloseAll(b.fds)
	for i := range b.fds {
		b.fds[i] = -1
	}
	return err
}

// sendable returns the descriptors to send, or an error if one was taken.
func (b *Batch) sendable() ([]int, error) {
	for i, f := range b.fds {
		if f < 0 {
			return nil, fmt.Errorf("unixmsg: send item %d (%q): %w", i, b.items[i].Name, ErrTaken)
		}
	}
	return b.fds, nil
}

// verify checks every descriptor's kind.
func (b *Batch) verify() error {
	if len(b.fds) > 0 {
		want := make([]kinds.Kind, len(b.items))
		for i := range b.items {
			want[i] = b.items[i].Kind
		}
		if i, err := kinds.VerifyAll(b.fds, want); err != nil {
			if errors.Is(err, kinds.ErrMismatch) {
				return &kindError{index: i, name: b.items[i].Name, err: err}
			}
			return fmt.Errorf("unixmsg: verify item %d (%q): %w", i, b.items[i].Name, err)
		}
	}
	return nil
}

// fileNameKey is the meta key under which the name of the *os.File an
// item came from travels, as the item's first meta entry (PROTOCOL.md,
// "Reserved meta keys").
const fileNameKey = "unixmsg.file-name"

// noteFile records the name of v, the value of the item just added, if v
// is an *os.File that has one.
func (b *Batch) noteFile(v any) {
	f, ok := v.(*os.File)
	if !ok || f.Name() == "" {
		return
	}
	if b.files == nil {
		b.files = make([]string, len(b.items), cap(b.items))
	}
	b.files[len(b.items)-1] = f.Name()
}

// wireItems returns the items as they travel: those that came from an
// *os.File with its name as their first meta entry, unless their meta has
// that key already or the entry would break lim (which has its defaults).
// The batch's own items stay as they are.
func (b *Batch) wireItems(lim *Limits) []Item {
	if b.files == nil {
		return b.items
	}
	items := slices.Clone(b.items)
	for i, name := range b.files {
		it := &items[i]
		if name == "" || len(name) > math.MaxUint16 || len(it.Meta) >= lim.MaxMetaEntries {
			continue
		}
		size := len(fileNameKey) + len(name)
		for _, e := range it.Meta {
			size += len(e.Key) + len(e.Value)
		}
		if _, dup := it.Meta.Get(fileNameKey); dup || size > lim.MaxMetaBytes {
			continue
		}
		it.Meta = append(append(make(Meta, 0, len(it.Meta)+1), KV{Key: fileNameKey, Value: name}), it.Meta...)
	}
	return items
}

// takeFileNames takes the file names that arrived as the items' first
// meta entries out of their meta.
func (b *Batch) takeFileNames() {
	for i := range b.items {
		it := &b.items[i]
		if len(it.Meta) == 0 || it.Meta[0].Key != fileNameKey {
			continue
		}
		if b.files == nil {
			b.files = make([]string, len(b.items))
		}
		b.files[i] = it.Meta[0].Value
		if it.Meta = it.Meta[1:]; len(it.Meta) == 0 {
			it.Meta = nil
		}
	}
}

package graceful

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sort"

	"github.com/fdpass/fdpass/unixmsg"
)

// Errors of the handler API. Match them with errors.Is.
var (
	ErrNoHandler       = errors.New("graceful: no handler")                               // Serve with a nil Handler
	ErrHandlerFailed   = errors.New("graceful: the server's handler failed")              // Receive: carries the server's reason
	ErrHandlerProtocol = errors.New("graceful: peer does not speak the handler protocol") // Receive
	ErrNotFiler        = errors.New("graceful: value has no file descriptor")             // not a syscall.Conn
	ErrFdKind          = errors.New("graceful: descriptor is not of the requested kind")  // FdListener, FdConn, FdPacketConn
)

// Meta describes a descriptor sent by a handler; it arrives whole with it.
type Meta struct {
	Name   string            // optional; unique within one batch if set
	Values map[string]string // the item's unixmsg meta
	// Custom is encoded with encoding/gob, as in the original package
	// (gob.Register other than basic types on both sides). Prefer Values.
	//
	// encoding/gob is not hardened against hostile input, so a client
	// bounds what it decodes: at most 64 KiB of gob per item (a Server
	// refuses to send more), decoded only once the whole batch has been
	// accepted (the handler protocol's tag, unixmsg's limits, the server's
	// end of the exchange), and into a map made beforehand, so that the
	// entry count the peer announces sizes nothing. Gob still sizes what
	// it makes for a value inside Custom from the count the peer sends:
	// a slice of a basic type by at most 10 MiB before it fails, once per
	// Receive (the first error ends it); a map inside a type an
	// application registers, without bound. Register such types only for
	// servers you trust.
	Custom map[string]any
}

// maxCustomLen bounds the gob encoding of one Meta.Custom, on both sides.
const maxCustomLen = 64 << 10

// encode returns what Meta becomes on the wire: the item name, the
// unixmsg meta and the item payload.
func (m Meta) encode() (string, unixmsg.Meta, []byte, error) {
	var um unixmsg.Meta
	if len(m.Values) > 0 {
		um = make(unixmsg.Meta, 0, len(m.Values))
		for k, v := range m.Values {
			um = append(um, unixmsg.KV{Key: k, Value: v})
		}
		sort.Slice(um, func(i, j int) bool { return um[i].Key < um[j].Key })
	}
	var payload []byte
	if len(m.Custom) > 0 {
		var buf bytes.Buffer
		if err := gob.NewEncoder(&buf).Encode(m.Custom); err != nil {
			return "", nil, nil, fmt.Errorf("graceful: encode Meta.Custom: %w", err)
		}
		if buf.Len() > maxCustomLen {
			return "", nil, nil, fmt.Errorf("graceful: encode Meta.Custom: %d bytes of gob, limit %d", buf.Len(), maxCustomLen)
		}
		payload = buf.Bytes()
	}
	return m.Name, um, payload, nil
}

// handlerMetaOf rebuilds the Meta sent with it from a received item.
func handlerMetaOf(it unixmsg.Item) (Meta, error) {
	m := Meta{Name: it.Name}
	if len(it.Meta) > 0 {
		m.Values = make(map[string]string, len(it.Meta))
		for _, kv := range it.Meta {
			m.Values[kv.Key] = kv.Value
		}
	}
	if len(it.Payload) > 0 {
		custom, err := decodeCustom(it.Payload)
		if err != nil {
			return Meta{}, fmt.Errorf("%w: item %q: decode Meta.Custom: %w", ErrHandlerProtocol, it.Name, err)
		}
		m.Custom = custom
	}
	return m, nil
}

// decodeCustom decodes a Meta.Custom from the peer's gob encoding b, of at
// most maxCustomLen bytes.
func decodeCustom(b []byte) (map[string]any, error) {
	if len(b) > maxCustomLen {
		return nil, fmt.Errorf("%d bytes of gob, limit %d", len(b), maxCustomLen)
	}
	// Into a nil map gob decodes a map it makes with the size the peer
	// announces, before a single entry arrives: 32 bytes asked for
	// hundreds of MiB. Into a map that exists it adds the entries as they
	// come, and an announced count beyond the input ends in an error.
	custom := make(map[string]any)
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&custom); err != nil {
		return nil, err
	}
	return custom, nil
}

// ResponseWriter collects, as duplicates, the descriptors a Server sends
// to one client: one batch once the handler returns, only if nothing
// failed. After the first failure Write and Add return that error.
type ResponseWriter interface {
	// Write adds a duplicate of fd; fd stays the caller's.
	Write(fd int, meta Meta) error
	// Add adds a duplicate of the descriptor behind v (any syscall.Conn);
	// closing v does not affect the batch.
	Add(v any, meta Meta) error
	// OnDelivered runs f once the client has acknowledged the batch,
	// before its Receive returns; not if the batch fails.
	OnDelivered(f func())
	Debugf(format string, args ...any) // logs, when the server has a Logger
	Infof(format string, args ...any)  // logs, when the server has a Logger
	// Errorf fails the batch: the client's Receive returns an error
	// matching ErrHandlerFailed with the message (which may use %w).
	Errorf(format string, args ...any)
}

// Handler builds the batch a Server sends to a client. conn is for its
// addresses and credentials only. A failing Write or Add, w.Errorf or a
// panic fails the batch: the client receives no descriptor.
type Handler interface {
	Handle(conn net.Conn, w ResponseWriter)
}

// HandlerFunc lets an ordinary function be a Handler.
type HandlerFunc func(conn net.Conn, w ResponseWriter)

// Handle calls h(conn, w).
func (h HandlerFunc) Handle(conn net.Conn, w ResponseWriter) { h(conn, w) }

// CallbackHandler sends nothing and runs the function once the client has
// the batch (ResponseWriter.OnDelivered), before its Receive returns: where
// a server handing over stops using its descriptors. A panic is recovered.
type CallbackHandler func()

// Handle registers cb with w.OnDelivered.
func (cb CallbackHandler) Handle(_ net.Conn, w ResponseWriter) { w.OnDelivered(cb) }

// SequenceHandler calls each of hs in order, into one batch, until one
// fails.
func SequenceHandler(hs ...Handler) Handler {
	hs = slices.Clone(hs)
	return HandlerFunc(func(conn net.Conn, w ResponseWriter) {
		for _, h := range hs {
			if rw, ok := w.(*responseWriter); ok && rw.err != nil {
				return
			}
			h.Handle(conn, w)
		}
	})
}

// Filer is a value that returns an *os.File, as the net types do.
type Filer interface {
	File() (*os.File, error)
}

// SendListener adds a duplicate of ln to w; closing ln does not affect it.
func SendListener(w ResponseWriter, ln net.Listener, meta Meta) error { return w.Add(ln, meta) }

// SendConn adds a duplicate of c to w; closing c does not affect it.
func SendConn(w ResponseWriter, c net.Conn, meta Meta) error { return w.Add(c, meta) }

// SendPacketConn adds a duplicate of pc to w; closing pc does not affect it.
func SendPacketConn(w ResponseWriter, pc net.PacketConn, meta Meta) error { return w.Add(pc, meta) }

// SendFile adds a duplicate of f to w; closing f does not affect it.
func SendFile(w ResponseWriter, f *os.File, meta Meta) error { return w.Add(f, meta) }

// SendFiler adds the file f.File returns to w, and closes that file.
func SendFiler(w ResponseWriter, f Filer, meta Meta) error {
	file, err := f.File()
	if err != nil {
		return err
	}
	defer file.Close()
	return w.Add(file, meta)
}

// ListenerHandler sends a duplicate of ln; closing ln does not affect it.
func ListenerHandler(ln net.Listener, meta Meta) Handler {
	return HandlerFunc(func(_ net.Conn, w ResponseWriter) { _ = w.Add(ln, meta) })
}

// ConnHandler sends a duplicate of c; closing c does not affect it.
func ConnHandler(c net.Conn, meta Meta) Handler {
	return HandlerFunc(func(_ net.Conn, w ResponseWriter) { _ = w.Add(c, meta) })
}

// PacketConnHandler sends a duplicate of pc; closing pc does not affect it.
func PacketConnHandler(pc net.PacketConn, meta Meta) Handler {
	return HandlerFunc(func(_ net.Conn, w ResponseWriter) { _ = w.Add(pc, meta) })
}

// FileHandler sends a duplicate of f (sharing its offset); closing f does
// not affect it.
func FileHandler(f *os.File, meta Meta) Handler {
	return HandlerFunc(func(_ net.Conn, w ResponseWriter) { _ = w.Add(f, meta) })
}

// FilerHandler sends the file f.File returns (see SendFiler).
func FilerHandler(f Filer, meta Meta) Handler {
	return HandlerFunc(func(_ net.Conn, w ResponseWriter) {
		if err := SendFiler(w, f, meta); err != nil {
			w.Errorf("graceful: send %q: %w", meta.Name, err)
		}
	})
}

// FdHandler sends a duplicate of fd, which stays the caller's and must stay
// open while the server may call the handler.
func FdHandler(fd int, meta Meta) Handler {
	return HandlerFunc(func(_ net.Conn, w ResponseWriter) { _ = w.Write(fd, meta) })
}

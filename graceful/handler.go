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
	// ErrNoHandler is returned by Serve and ListenAndServe when the handler
	// is nil.
	ErrNoHandler = errors.New("graceful: no handler")
	// ErrHandlerFailed is returned by Receive when the server's handler
	// failed (it called ResponseWriter.Errorf, a Write failed, or it
	// panicked) and so sent no descriptor. The error carries the server's
	// reason.
	ErrHandlerFailed = errors.New("graceful: the server's handler failed")
	// ErrHandlerProtocol is returned by Receive when the peer is not a
	// handler server of this package, or breaks its protocol.
	ErrHandlerProtocol = errors.New("graceful: peer does not speak the handler protocol")
	// ErrNotFiler is returned when a value given to a Send function or a
	// handler has no descriptor (it does not implement syscall.Conn).
	ErrNotFiler = errors.New("graceful: value has no file descriptor")
	// ErrFdKind is returned by FdListener, FdConn and FdPacketConn when the
	// descriptor is not of the requested kind.
	ErrFdKind = errors.New("graceful: descriptor is not of the requested kind")
)

// Meta describes a descriptor sent by a handler: its name and optional
// extra fields. It travels with the descriptor and arrives whole at the
// client.
type Meta struct {
	// Name names the descriptor. Names need not be set, but a name that is
	// set must be unique within the descriptors sent to one client.
	Name string
	// Values holds string key/value pairs. They travel as the item's
	// unixmsg meta, so any fdpass receiver can read them.
	Values map[string]string
	// Custom holds arbitrary values, encoded with encoding/gob as in the
	// original package: values of types other than gob's basic ones must
	// be registered with gob.Register on both sides. Prefer Values.
	Custom map[string]any
}

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
		if err := gob.NewDecoder(bytes.NewReader(it.Payload)).Decode(&m.Custom); err != nil {
			return Meta{}, fmt.Errorf("%w: item %q: decode Meta.Custom: %w", ErrHandlerProtocol, it.Name, err)
		}
	}
	return m, nil
}

// ResponseWriter collects the descriptors that a Server sends to one
// client. Everything written goes out in a single batch once the handler
// returns, and only if nothing failed: the client gets all of the
// descriptors or none of them.
//
// After the first failure every Write and Add returns that error, and the
// client gets it instead of descriptors.
//
// A ResponseWriter holds duplicates: writing a descriptor never changes the
// caller's, and the server closes its duplicates once the batch is sent.
type ResponseWriter interface {
	// Write adds a duplicate of the raw descriptor fd, with meta, to the
	// batch. fd stays the caller's.
	Write(fd int, meta Meta) error
	// Add adds a duplicate of the descriptor behind v (a net.Listener,
	// net.Conn, net.PacketConn, *os.File or any syscall.Conn) to the
	// batch. Closing v does not affect the batch, and sending the batch
	// does not affect v.
	Add(v any, meta Meta) error
	// OnDelivered registers f to run once the client has acknowledged the
	// whole batch, before the server closes the connection (and so before
	// the client's Receive returns). Functions run in the order they were
	// registered. If the batch is not delivered they do not run.
	OnDelivered(f func())

	// Debugf and Infof log, when the server has a Logger.
	Debugf(format string, args ...any)
	Infof(format string, args ...any)
	// Errorf reports that handling failed: it logs the message (when the
	// server has a Logger), and the batch is not sent. The client's
	// Receive returns an error matching ErrHandlerFailed with the message.
	// The format may use %w.
	Errorf(format string, args ...any)
}

// Handler builds the batch of descriptors a Server sends to a client that
// has connected. conn is the client's connection, for its addresses and
// credentials only: reading or writing it breaks the protocol.
//
// A handler reports failure through w (a failing Write or Add, or
// w.Errorf); a handler that panics fails too. Either way the client
// receives no descriptor.
type Handler interface {
	Handle(conn net.Conn, w ResponseWriter)
}

// HandlerFunc is an adapter to allow the use of ordinary functions as
// Handlers.
type HandlerFunc func(conn net.Conn, w ResponseWriter)

// Handle calls h(conn, w).
func (h HandlerFunc) Handle(conn net.Conn, w ResponseWriter) { h(conn, w) }

// CallbackHandler is a Handler that sends nothing and runs the function
// once the client has acknowledged the whole batch (see
// ResponseWriter.OnDelivered): after every descriptor of the batch has
// been handed over, before the connection is closed. In a SequenceHandler
// callbacks run in their order. If the batch fails, the function does not
// run. A callback that panics is recovered, and logged when the server has
// a Logger; the callbacks after it still run.
//
// A callback is where a server that is handing over its descriptors stops
// using them, or closes its own unix listener so a successor can listen on
// the same path: the client's Receive returns only after the callbacks have
// run.
type CallbackHandler func()

// Handle registers cb with w.OnDelivered.
func (cb CallbackHandler) Handle(_ net.Conn, w ResponseWriter) { w.OnDelivered(cb) }

// SequenceHandler returns a Handler that calls each of hs in order. All
// their descriptors go out in one batch; once one of them fails, the
// handlers after it are not called.
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

// Filer describes a value that can return an *os.File (net.TCPListener,
// net.TCPConn, net.UDPConn, the unix types and *os.File all can). It is
// kept for the original package's SendFiler and FilerHandler.
type Filer interface {
	File() (*os.File, error)
}

// SendListener adds a duplicate of ln's descriptor, with meta, to w.
// Closing ln does not affect what is sent.
func SendListener(w ResponseWriter, ln net.Listener, meta Meta) error { return w.Add(ln, meta) }

// SendConn adds a duplicate of c's descriptor, with meta, to w. Closing c
// does not affect what is sent.
func SendConn(w ResponseWriter, c net.Conn, meta Meta) error { return w.Add(c, meta) }

// SendPacketConn adds a duplicate of pc's descriptor, with meta, to w.
// Closing pc does not affect what is sent.
func SendPacketConn(w ResponseWriter, pc net.PacketConn, meta Meta) error { return w.Add(pc, meta) }

// SendFile adds a duplicate of f's descriptor, with meta, to w. Closing f
// does not affect what is sent.
func SendFile(w ResponseWriter, f *os.File, meta Meta) error { return w.Add(f, meta) }

// SendFiler adds the descriptor of the file that f.File returns, with
// meta, to w; that file is closed before SendFiler returns. Closing f does
// not affect what is sent.
func SendFiler(w ResponseWriter, f Filer, meta Meta) error {
	file, err := f.File()
	if err != nil {
		return err
	}
	defer file.Close()
	return w.Add(file, meta)
}

// ListenerHandler returns a Handler that sends a duplicate of ln's
// descriptor, with meta. The caller keeps ln: closing ln does not affect
// what the client receives, and the client closing its listener does not
// affect ln.
func ListenerHandler(ln net.Listener, meta Meta) Handler {
	return HandlerFunc(func(_ net.Conn, w ResponseWriter) { _ = w.Add(ln, meta) })
}

// ConnHandler returns a Handler that sends a duplicate of c's descriptor,
// with meta. The caller keeps c: closing c does not affect what the client
// receives. Both ends then share one connection; the caller should stop
// reading c once the client takes over.
func ConnHandler(c net.Conn, meta Meta) Handler {
	return HandlerFunc(func(_ net.Conn, w ResponseWriter) { _ = w.Add(c, meta) })
}

// PacketConnHandler returns a Handler that sends a duplicate of pc's
// descriptor, with meta. The caller keeps pc: closing pc does not affect
// what the client receives.
func PacketConnHandler(pc net.PacketConn, meta Meta) Handler {
	return HandlerFunc(func(_ net.Conn, w ResponseWriter) { _ = w.Add(pc, meta) })
}

// FileHandler returns a Handler that sends a duplicate of f's descriptor,
// with meta. The caller keeps f: closing f does not affect what the client
// receives. The duplicate shares f's file offset.
func FileHandler(f *os.File, meta Meta) Handler {
	return HandlerFunc(func(_ net.Conn, w ResponseWriter) { _ = w.Add(f, meta) })
}

// FilerHandler returns a Handler that sends the descriptor of the file
// that f.File returns, with meta (see SendFiler). The caller keeps f.
func FilerHandler(f Filer, meta Meta) Handler {
	return HandlerFunc(func(_ net.Conn, w ResponseWriter) {
		if err := SendFiler(w, f, meta); err != nil {
			w.Errorf("graceful: send %q: %w", meta.Name, err)
		}
	})
}

// FdHandler returns a Handler that sends a duplicate of the raw descriptor
// fd, with meta. fd stays the caller's: the handler never closes it, and
// it must stay open while the server may call the handler.
func FdHandler(fd int, meta Meta) Handler {
	return HandlerFunc(func(_ net.Conn, w ResponseWriter) { _ = w.Write(fd, meta) })
}

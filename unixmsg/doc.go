// Package unixmsg sends and receives batches of typed, named descriptors over
// one unix socket.
//
// A [Batch] holds items; each item is one descriptor with its kind (detected
// from the descriptor, see package kinds), a name, [Meta] (string key/value
// pairs) and an optional payload of application state. One [Conn.Send] hands
// any number of items to the peer; one [Conn.Receive] returns the batch
// whole, or an error with every descriptor that arrived already closed.
//
//	var b unixmsg.Batch
//	defer b.Close()
//	b.Add("http", ln, unixmsg.MetaOf("addr", ln.Addr().String()), nil)
//	err := conn.Send(&b) // waits for the peer's acknowledgement
//
//	got, err := conn.Receive()
//	defer got.Close() // closes what was not taken
//	ln, err := got.Listener("http")
//
// # Ownership
//
// Adding a value to a batch duplicates its descriptor: the caller keeps its
// own ([Batch.AddBorrowed] sends the value's own descriptor instead, for a
// caller that keeps it open until the batch is closed). Sending never
// closes anything. [Conn.Send] waits for the receiver's acknowledgement by
// default; [Conn.SendNoAck] streams batches without one. A received batch owns its
// descriptors until they are taken (Listener, Conn, PacketConn, File,
// NsHandle, TakeFD); Close closes the rest. Received descriptors are
// close-on-exec (MSG_CMSG_CLOEXEC).
//
// # Checks
//
// Every frame is checked against [Limits] before anything is allocated for
// it. The descriptors that arrive are counted against those announced, in
// every message. Unless [Options].SkipVerify is set, each received
// descriptor's real kind is checked against the kind its sender declared,
// one at a time (TCP and UDP with one getsockopt each), the checks of a
// large batch spread over the processors; on Linux the sockets of a
// large batch are read through io_uring where the kernel allows, many
// descriptors per system call (see kinds.VerifyAll). An error caused by the peer
// wraps one of the package's sentinel errors.
//
// # Sockets
//
// SOCK_SEQPACKET is preferred: [Pair], [Listen] and the graceful package
// use it. Two processes start a session with [Listen] and [Listener.Accept]
// on one side and Dial("unixpacket", addr, opts) on the other; a socket of
// another type at addr is named in Dial's error. [NewConn] takes a
// connection made otherwise. SOCK_STREAM works too: the framing does not depend on reads lining up with
// writes, and descriptors are matched to frames by position (see
// wire.Decoder). The wire format is specified in PROTOCOL.md beside this
// file; its encoders and parsers are in package wire (unixmsg/wire), for
// fuzzing and for other implementations.
//
// I/O goes through the runtime's network poller, so deadlines
// ([Conn.SetDeadline]) and context cancellation ([Conn.SendContext],
// [Conn.ReceiveContext]) work and no thread is parked.
//
// # Platforms
//
// Linux. On other Unix systems the package builds, and [NewConn] returns
// [ErrUnsupported].
package unixmsg

// Package handoffmsg is the wire format of graceful's handoff exchange:
// the control messages that travel as the payloads of unixmsg batches on
// the handoff socket (HELLO, OFFER, READY, DONE, ERROR, CONNS, ADOPTED),
// the meta keys of the descriptors an OFFER carries, and the payload of a
// migrating connection. graceful/HANDOFF.md specifies all of it.
//
// The encoders and parsers are pure functions, paired (Append with Parse,
// AppendConnPayload with ParseConnPayload), so that the fuzz targets reach
// them without sockets. Send, Receive and SendError move one message over
// a unixmsg.Conn.
//
// The sentinel errors here are the ones package graceful exports under the
// same names: a peer's failure is matched the same way whichever layer
// found it.
package handoffmsg

package handoffmsg

import "encoding/binary"

// Meta keys and roles of the items of an OFFER batch (see HANDOFF.md,
// "OFFER items"), and of a CONNS batch.
const (
	MetaRole    = "role"
	MetaNetwork = "network"
	MetaAddr    = "addr"
	MetaNetNS   = "netns"
	MetaPID     = "pid" // of the handoff item: the process that offers it

	RoleHandoff  = "handoff"
	RoleListener = "listener"
	RolePacket   = "packet"
	RoleFile     = "file"
	RoleNamed    = "named"
	RoleConn     = "conn"
)

// ConnPayloadLen returns the length of the payload AppendConnPayload makes
// of state and buffered.
func ConnPayloadLen(state []byte, buffered ...[]byte) int {
	n := 4 + len(state)
	for _, b := range buffered {
		n += len(b)
	}
	return n
}

// AppendConnPayload appends a migrating connection's CONNS item payload to
// dst: u32 length S of the state, S bytes of state, then the bytes read
// from the connection but not processed, the parts of buffered in order.
func AppendConnPayload(dst, state []byte, buffered ...[]byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(state)))
	dst = append(dst, state...)
	for _, b := range buffered {
		dst = append(dst, b...)
	}
	return dst
}

// ParseConnPayload splits a CONNS item's payload into the state and the
// bytes read but not processed. Both point into b, capped so that an
// append to state cannot overwrite buffered.
func ParseConnPayload(b []byte) (state, buffered []byte, err error) {
	if len(b) < 4 {
		return nil, nil, errf(ErrMalformed, "connection payload of %d bytes", len(b))
	}
	s := binary.LittleEndian.Uint32(b)
	if uint64(s) > uint64(len(b)-4) {
		return nil, nil, errf(ErrMalformed, "connection state of %d bytes in a payload of %d", s, len(b))
	}
	return b[4 : 4+s : 4+s], b[4+s:], nil
}

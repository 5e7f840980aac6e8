package wire

import (
	"encoding/binary"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

// struct cmsghdr as Linux lays it out: a size_t length, two ints, data
// aligned to sizeof(long).
const (
	solSocket  = unix.SOL_SOCKET
	scmRights  = unix.SCM_RIGHTS
	cmsgHdrLen = unix.SizeofCmsghdr
	cmsgLenLen = cmsgHdrLen - 8
	cmsgAlign  = int(unsafe.Sizeof(uintptr(0)))
)

func cmsgAlignUp(n int) int { return (n + cmsgAlign - 1) &^ (cmsgAlign - 1) }

// ParseControl parses a control buffer as filled in by recvmsg(2) on
// Linux. It returns every descriptor of every SCM_RIGHTS message, whatever
// else the buffer holds, so that the caller can close them; err wraps
// ErrUnexpectedControl when another control message is present and
// ErrMalformed when the buffer does not parse. It never panics. Its
// encoding half is x/sys's unix.UnixRights, which is safe on every input.
func ParseControl(oob []byte) (fds []int, err error) {
	// The first control message that is not SCM_RIGHTS, for the error.
	var other error
	for len(oob) >= cmsgHdrLen {
		var l uint64
		if cmsgLenLen == 8 {
			l = binary.NativeEndian.Uint64(oob[0:8])
		} else {
			l = uint64(binary.NativeEndian.Uint32(oob[0:4]))
		}
		level := int32(binary.NativeEndian.Uint32(oob[cmsgLenLen:]))
		typ := int32(binary.NativeEndian.Uint32(oob[cmsgLenLen+4:]))
		if l < cmsgHdrLen || l > uint64(len(oob)) {
			return fds, errf(ErrMalformed, "control message length %d in a buffer of %d", l, len(oob))
		}
		data := oob[cmsgHdrLen:l]
		if level == solSocket && typ == scmRights {
			if len(data)%4 != 0 {
				return fds, errf(ErrMalformed, "SCM_RIGHTS of %d bytes", len(data))
			}
			// One allocation for the message's descriptors, not one
			// per doubling (a message brings up to 253).
			fds = slices.Grow(fds, len(data)/4)
			for i := 0; i+4 <= len(data); i += 4 {
				fds = append(fds, int(int32(binary.NativeEndian.Uint32(data[i:]))))
			}
		} else if other == nil {
			other = errf(ErrUnexpectedControl, "level %d type %d (%d bytes)", level, typ, len(data))
		}
		next := cmsgAlignUp(int(l))
		if next >= len(oob) {
			break
		}
		oob = oob[next:]
	}
	return fds, other
}

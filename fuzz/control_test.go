package fuzz_test

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"github.com/fdpass/fdpass/unixmsg/wire"
	"golang.org/x/sys/unix"
)

// FuzzParseControl hands wire.ParseControl arbitrary control buffers.
//
// Invariants: no panic; the descriptors returned are exactly the ints of
// the SCM_RIGHTS messages before the first malformed header (so that a
// caller can close everything that arrived); the error is ErrMalformed when
// a header or an SCM_RIGHTS length does not parse, else
// ErrUnexpectedControl when another control message is present, else nil.
func FuzzParseControl(f *testing.F) {
	for _, s := range controlSeeds() {
		if s.add {
			f.Add(s.oob)
		}
	}
	f.Fuzz(func(t *testing.T, oob []byte) {
		want, malformed, other := refParseControl(oob)
		fds, err := wire.ParseControl(oob)
		switch {
		case malformed && !isAny(err, wire.ErrMalformed):
			t.Fatalf("error %v, want ErrMalformed", err)
		case !malformed && other && !isAny(err, wire.ErrUnexpectedControl):
			t.Fatalf("error %v, want ErrUnexpectedControl", err)
		case !malformed && !other && err != nil:
			t.Fatalf("error %v, want nil", err)
		}
		if len(fds) != len(want) {
			t.Fatalf("descriptors %v, want %v", fds, want)
		}
		for i := range want {
			if fds[i] != want[i] {
				t.Fatalf("descriptors %v, want %v", fds, want)
			}
		}
		if malformed {
			return
		}
		// Where the buffer parses, x/sys must agree on the descriptors.
		msgs, err := unix.ParseSocketControlMessage(oob)
		if err != nil {
			t.Fatalf("ParseControl parsed a buffer that x/sys refuses: %v", err)
		}
		var xfds []int
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_RIGHTS {
				r, err := unix.ParseUnixRights(&m)
				if err != nil {
					t.Fatalf("x/sys ParseUnixRights: %v", err)
				}
				xfds = append(xfds, r...)
			}
		}
		if len(xfds) != len(fds) {
			t.Fatalf("descriptors %v, x/sys says %v", fds, xfds)
		}
		for i := range xfds {
			if fds[i] != xfds[i] {
				t.Fatalf("descriptors %v, x/sys says %v", fds, xfds)
			}
		}
	})
}

// refParseControl is a plain reading of cmsg(3) for Linux: each message is
// a header (a size_t length covering header and data, an int level, an int
// type) followed by its data, the next one starting at the length rounded
// up to the alignment of a long.
func refParseControl(b []byte) (fds []int, malformed, other bool) {
	const align = int(unsafe.Sizeof(uintptr(0)))
	for len(b) >= unix.SizeofCmsghdr {
		var l uint64
		if unix.SizeofCmsghdr == 16 {
			l = binary.NativeEndian.Uint64(b)
		} else {
			l = uint64(binary.NativeEndian.Uint32(b))
		}
		level := int32(binary.NativeEndian.Uint32(b[unix.SizeofCmsghdr-8:]))
		typ := int32(binary.NativeEndian.Uint32(b[unix.SizeofCmsghdr-4:]))
		if l < unix.SizeofCmsghdr || l > uint64(len(b)) {
			return fds, true, other
		}
		data := b[unix.SizeofCmsghdr:l]
		if level == unix.SOL_SOCKET && typ == unix.SCM_RIGHTS {
			if len(data)%4 != 0 {
				return fds, true, other
			}
			for ; len(data) > 0; data = data[4:] {
				fds = append(fds, int(int32(binary.NativeEndian.Uint32(data))))
			}
		} else {
			other = true
		}
		next := (int(l) + align - 1) &^ (align - 1)
		if next >= len(b) {
			break
		}
		b = b[next:]
	}
	return fds, false, other
}

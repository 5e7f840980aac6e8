package wire_test

import (
	"testing"

	"github.com/fdpass/fdpass/unixmsg/wire"
)

func TestStrings(t *testing.T) {
	t.Parallel() // no descriptors: nothing for a leak check to count
	frames := map[wire.FrameType]string{
		0:              "frame(0)",
		wire.FrameHead: "HEAD",
		wire.FrameData: "DATA",
		wire.FrameAck:  "ACK",
		4:              "frame(4)",
		255:            "frame(255)",
	}
	for ft, want := range frames {
		if got := ft.String(); got != want {
			t.Errorf("FrameType(%d).String() = %q, want %q", uint8(ft), got, want)
		}
	}
	statuses := map[wire.Status]string{
		wire.StatusOK:         "ok",
		wire.StatusMalformed:  "malformed",
		wire.StatusLimit:      "limit",
		wire.StatusKind:       "kind",
		wire.StatusDescriptor: "descriptor",
		wire.StatusFailed:     "failed",
		6:                     "status(6)",
		1<<32 - 1:             "status(4294967295)",
	}
	for s, want := range statuses {
		if got := s.String(); got != want {
			t.Errorf("Status(%d).String() = %q, want %q", uint32(s), got, want)
		}
	}
}

package unixmsg_test

import (
	"errors"
	"testing"

	"github.com/fdpass/fdpass/unixmsg"
	"github.com/fdpass/fdpass/unixmsg/wire"
)

func TestErrUnsupported(t *testing.T) {
	t.Parallel() // no descriptors: nothing for a leak check to count
	if !errors.Is(unixmsg.ErrUnsupported, errors.ErrUnsupported) {
		t.Errorf("ErrUnsupported (%v) does not match errors.ErrUnsupported", unixmsg.ErrUnsupported)
	}
	if errors.Is(unixmsg.ErrMalformed, errors.ErrUnsupported) {
		t.Error("ErrMalformed matches errors.ErrUnsupported")
	}
}

// The sentinels of the wire format are the same values in both packages,
// so that an error from either matches either.
func TestSentinelsShared(t *testing.T) {
	t.Parallel()
	pairs := []struct{ unixmsg, wire error }{
		{unixmsg.ErrBadMagic, wire.ErrBadMagic},
		{unixmsg.ErrVersion, wire.ErrVersion},
		{unixmsg.ErrMalformed, wire.ErrMalformed},
		{unixmsg.ErrLimit, wire.ErrLimit},
		{unixmsg.ErrMissingFDs, wire.ErrMissingFDs},
		{unixmsg.ErrUnexpectedFDs, wire.ErrUnexpectedFDs},
		{unixmsg.ErrUnexpectedControl, wire.ErrUnexpectedControl},
	}
	for _, p := range pairs {
		if p.unixmsg != p.wire {
			t.Errorf("unixmsg's %q is not wire's %q", p.unixmsg, p.wire)
		}
	}
}

package systemd_test

import (
	"errors"
	"testing"

	"github.com/fdpass/fdpass/graceful/systemd"
)

func TestErrUnsupported(t *testing.T) {
	t.Parallel() // no descriptors: nothing for a leak check to count
	if !errors.Is(systemd.ErrUnsupported, errors.ErrUnsupported) {
		t.Errorf("ErrUnsupported (%v) does not match errors.ErrUnsupported", systemd.ErrUnsupported)
	}
	if errors.Is(systemd.ErrEnvironment, errors.ErrUnsupported) {
		t.Error("ErrEnvironment matches errors.ErrUnsupported")
	}
}

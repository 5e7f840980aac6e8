package kinds_test

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/fdpass/fdpass/kinds"
)

// The tests in this file open no descriptors, need no system calls and
// build everywhere.

func TestKindMethods(t *testing.T) {
	t.Parallel() // no descriptors: nothing for a leak check to count
	tests := []struct {
		k        kinds.Kind
		str      string
		valid    bool
		isSocket bool
	}{
		{kinds.Invalid, "invalid", false, false},
		{kinds.TCPListener, "tcp-listener", true, true},
		{kinds.TCPConn, "tcp-conn", true, true},
		{kinds.UDP, "udp", true, true},
		{kinds.UnixListener, "unix-listener", true, true},
		{kinds.UnixConn, "unix-conn", true, true},
		{kinds.UnixDatagram, "unix-datagram", true, true},
		{kinds.File, "file", true, false},
		{kinds.NetNS, "netns", true, false},
		{kinds.Other, "other", true, false},
		{10, "kind(10)", false, false},
		{255, "kind(255)", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.str, func(t *testing.T) {
			if got := tt.k.String(); got != tt.str {
				t.Errorf("String() = %q, want %q", got, tt.str)
			}
			if got := tt.k.Valid(); got != tt.valid {
				t.Errorf("Valid() = %v, want %v", got, tt.valid)
			}
			if got := tt.k.IsSocket(); got != tt.isSocket {
				t.Errorf("IsSocket() = %v, want %v", got, tt.isSocket)
			}
		})
	}
}

// TestKindValues pins the numeric values, which are part of the wire format.
func TestKindValues(t *testing.T) {
	t.Parallel() // no descriptors: nothing for a leak check to count
	want := []kinds.Kind{
		kinds.Invalid, kinds.TCPListener, kinds.TCPConn, kinds.UDP, kinds.UnixListener,
		kinds.UnixConn, kinds.UnixDatagram, kinds.File, kinds.NetNS, kinds.Other,
	}
	for i, k := range want {
		if int(k) != i {
			t.Errorf("%v = %d, want %d", k, k, i)
		}
	}
}

func TestInfoNetwork(t *testing.T) {
	t.Parallel() // no descriptors: nothing for a leak check to count
	tests := []struct {
		info kinds.Info
		want string
	}{
		{kinds.Info{Kind: kinds.TCPListener, Family: syscall.AF_INET, Type: syscall.SOCK_STREAM}, "tcp4"},
		{kinds.Info{Kind: kinds.TCPConn, Family: syscall.AF_INET6, Type: syscall.SOCK_STREAM}, "tcp6"},
		{kinds.Info{Kind: kinds.UDP, Family: syscall.AF_INET, Type: syscall.SOCK_DGRAM}, "udp4"},
		{kinds.Info{Kind: kinds.UDP, Family: syscall.AF_INET6, Type: syscall.SOCK_DGRAM}, "udp6"},
		{kinds.Info{Kind: kinds.UnixListener, Family: syscall.AF_UNIX, Type: syscall.SOCK_STREAM}, "unix"},
		{kinds.Info{Kind: kinds.UnixConn, Family: syscall.AF_UNIX, Type: syscall.SOCK_STREAM}, "unix"},
		{kinds.Info{Kind: kinds.UnixListener, Family: syscall.AF_UNIX, Type: syscall.SOCK_SEQPACKET}, "unixpacket"},
		{kinds.Info{Kind: kinds.UnixConn, Family: syscall.AF_UNIX, Type: syscall.SOCK_SEQPACKET}, "unixpacket"},
		{kinds.Info{Kind: kinds.UnixDatagram, Family: syscall.AF_UNIX, Type: syscall.SOCK_DGRAM}, "unixgram"},
		{kinds.Info{Kind: kinds.File}, ""},
		{kinds.Info{Kind: kinds.NetNS}, ""},
		{kinds.Info{Kind: kinds.Other, Family: syscall.AF_INET, Type: syscall.SOCK_RAW}, ""},
		{kinds.Info{}, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v-%d-%d", tt.info.Kind, tt.info.Family, tt.info.Type), func(t *testing.T) {
			if got := tt.info.Network(); got != tt.want {
				t.Errorf("%+v.Network() = %q, want %q", tt.info, got, tt.want)
			}
		})
	}
}

func TestMismatchError(t *testing.T) {
	t.Parallel() // no descriptors: nothing for a leak check to count
	var err error = &kinds.MismatchError{Want: kinds.UDP, Got: kinds.TCPListener}
	if got, want := err.Error(), "kinds: descriptor is tcp-listener, declared udp"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	wrapped := fmt.Errorf("receiving: %w", err)
	if !errors.Is(wrapped, kinds.ErrMismatch) {
		t.Error("a wrapped *MismatchError does not match ErrMismatch")
	}
	if errors.Is(wrapped, kinds.ErrConvert) || errors.Is(wrapped, kinds.ErrUnsupported) {
		t.Error("a *MismatchError matches an unrelated sentinel")
	}
	var me *kinds.MismatchError
	if !errors.As(wrapped, &me) || me.Want != kinds.UDP || me.Got != kinds.TCPListener {
		t.Errorf("errors.As gave %+v", me)
	}
}

func TestErrUnsupported(t *testing.T) {
	t.Parallel() // no descriptors: nothing for a leak check to count
	if !errors.Is(kinds.ErrUnsupported, errors.ErrUnsupported) {
		t.Errorf("ErrUnsupported (%v) does not match errors.ErrUnsupported", kinds.ErrUnsupported)
	}
	for _, err := range []error{kinds.ErrMismatch, kinds.ErrConvert} {
		if errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("%v matches errors.ErrUnsupported", err)
		}
	}
}

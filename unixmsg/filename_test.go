//go:build linux

package unixmsg_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/unixmsg"
)

// A received file is named after the sender's *os.File (its path, for a
// file it opened); the name travels under a reserved meta key that the
// receiver does not show among the item's meta.
func TestFileNameTravels(t *testing.T) {
	checkLeaks(t)
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	opened, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer opened.Close()
	borrowed, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer borrowed.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()

	// A second *os.File, named "", on a duplicate of w's descriptor.
	d, err := fd.DupFD(int(w.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	unnamed := os.NewFile(uintptr(d), "")
	defer unnamed.Close()

	meta := unixmsg.MetaOf("k", "v")
	var b unixmsg.Batch
	defer b.Close()
	for _, add := range []error{
		b.Add("config", opened, meta, nil),
		b.AddBorrowed("borrowed", borrowed, nil, nil),
		b.Add("pipe", r, nil, nil),
		b.AddFD("raw", int(w.Fd()), meta, nil),
		b.Add("unnamed", unnamed, nil, nil),
	} {
		if add != nil {
			t.Fatal(add)
		}
	}
	tx, rx := pair(t, nil)
	got := sendReceive(t, tx, rx, &b)
	defer got.Close()
	if m := b.Item(0).Meta; !slices.Equal(m, meta) {
		t.Errorf("the sender's item meta became %v, want %v", m, meta)
	}

	// A received batch sent on keeps the names.
	tx2, rx2 := pair(t, nil)
	again := sendReceive(t, tx2, rx2, got)
	defer again.Close()

	for _, recv := range []*unixmsg.Batch{got, again} {
		for _, tc := range []struct {
			item, name string
			meta       unixmsg.Meta
		}{
			{"config", path, meta},
			{"borrowed", path, nil},
			{"pipe", r.Name(), nil},
			{"raw", "raw", meta},        // a raw descriptor has no name
			{"unnamed", "unnamed", nil}, // nor has a file named ""
		} {
			i, err := recv.Lookup(tc.item)
			if err != nil {
				t.Fatal(err)
			}
			if m := recv.Item(i).Meta; !slices.Equal(m, tc.meta) {
				t.Errorf("%s: received meta %v, want %v", tc.item, m, tc.meta)
			}
		}
	}
	for _, tc := range []struct{ item, name string }{
		{"config", path}, {"borrowed", path}, {"pipe", r.Name()}, {"raw", "raw"}, {"unnamed", "unnamed"},
	} {
		f, err := again.File(tc.item)
		if err != nil {
			t.Fatal(err)
		}
		if f.Name() != tc.name {
			t.Errorf("%s: received file named %q, want %q", tc.item, f.Name(), tc.name)
		}
		f.Close()
	}
}

// The name is left out where it would break the sender's limits, or where
// the meta has the key already: the batch goes as it would without it.
func TestFileNameWithinLimits(t *testing.T) {
	checkLeaks(t)
	long := filepath.Join(t.TempDir(), strings.Repeat("n", 200))
	f, err := os.Create(long)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lim := unixmsg.Limits{MaxMetaEntries: 1, MaxMetaBytes: 100}
	tx, rx := pair(t, &unixmsg.Options{Limits: lim})
	var b unixmsg.Batch
	defer b.Close()
	own := unixmsg.Meta{{Key: "unixmsg.file-name", Value: "mine"}}
	for _, add := range []error{
		b.Add("full", f, unixmsg.MetaOf("k", "v"), nil), // MaxMetaEntries
		b.Add("long", f, nil, nil),                      // MaxMetaBytes
		b.Add("own", f, own, nil),                       // the key is taken
	} {
		if add != nil {
			t.Fatal(add)
		}
	}
	got := sendReceive(t, tx, rx, &b)
	defer got.Close()
	for _, tc := range []struct{ item, name string }{{"full", "full"}, {"long", "long"}, {"own", "mine"}} {
		f, err := got.File(tc.item)
		if err != nil {
			t.Fatal(err)
		}
		if f.Name() != tc.name {
			t.Errorf("%s: received file named %q, want %q", tc.item, f.Name(), tc.name)
		}
		f.Close()
	}
}

// sendReceive sends b on tx and returns what rx receives.
func sendReceive(t *testing.T, tx, rx *unixmsg.Conn, b *unixmsg.Batch) *unixmsg.Batch {
	t.Helper()
	errc := sendAsync(tx, b)
	got, err := rx.Receive()
	if serr := recvErr(t, errc); serr != nil {
		t.Fatalf("Send: %v", serr)
	}
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	return got
}

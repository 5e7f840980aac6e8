package unixmsg_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/fdpass/fdpass/unixmsg"
)

func TestMetaOf(t *testing.T) {
	t.Parallel() // no descriptors: nothing for a leak check to count
	if got := unixmsg.MetaOf(); len(got) != 0 {
		t.Errorf("MetaOf() = %v, want empty", got)
	}
	want := unixmsg.Meta{{Key: "a", Value: "1"}, {Key: "", Value: ""}, {Key: "c", Value: "3"}}
	if got := unixmsg.MetaOf("a", "1", "", "", "c", "3"); !slices.Equal(got, want) {
		t.Errorf("MetaOf = %v, want %v", got, want)
	}
	for _, kv := range [][]string{{"a"}, {"a", "1", "b"}} {
		func() {
			defer func() {
				if r := recover(); r != "unixmsg.MetaOf: odd argument count" {
					t.Errorf("MetaOf(%q) panicked with %v, want %q", kv, r, "unixmsg.MetaOf: odd argument count")
				}
			}()
			m := unixmsg.MetaOf(kv...)
			t.Errorf("MetaOf(%q) = %v, want a panic", kv, m)
		}()
	}
}

func ExampleMetaOf() {
	m := unixmsg.MetaOf("addr", "127.0.0.1:8080", "proto", "http/1.1")
	fmt.Println(m.Value("proto"))
	_, ok := m.Get("tls")
	fmt.Println(ok)
	// Output:
	// http/1.1
	// false
}

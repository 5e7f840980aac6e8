package unixmsg

import "github.com/fdpass/fdpass/unixmsg/wire"

// Item is what travels with one descriptor: its kind, a name, meta and an
// optional payload (application state, such as bytes already read from a
// connection). The wire format defines it (see package wire).
type Item = wire.Item

// KV is one meta entry.
type KV = wire.KV

// Meta is an ordered list of string key/value pairs with unique keys; Get
// and Value look a key up.
type Meta = wire.Meta

// MetaOf builds a Meta from alternating keys and values. It panics if given
// an odd number of arguments, as strings.NewReplacer does: a key without a
// value is a mistake in the program.
func MetaOf(kv ...string) Meta {
	if len(kv)%2 == 1 {
		panic("unixmsg.MetaOf: odd argument count")
	}
	m := make(Meta, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		m = append(m, KV{Key: kv[i], Value: kv[i+1]})
	}
	return m
}

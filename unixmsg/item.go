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

// MetaOf builds a Meta from alternating keys and values; a key without a
// value gets "".
func MetaOf(kv ...string) Meta {
	m := make(Meta, 0, (len(kv)+1)/2)
	for i := 0; i < len(kv); i += 2 {
		e := KV{Key: kv[i]}
		if i+1 < len(kv) {
			e.Value = kv[i+1]
		}
		m = append(m, e)
	}
	return m
}

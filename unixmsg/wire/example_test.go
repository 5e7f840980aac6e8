package wire_test

import (
	"fmt"
	"log"
	"slices"

	"github.com/fdpass/fdpass/kinds"
	"github.com/fdpass/fdpass/unixmsg/wire"
)

// A batch of two items is encoded as a HEAD frame and one DATA frame (two
// records: 10 bytes each, then the name, meta and payload) that carries
// both descriptors, and decoded back. On a socket each frame is one
// sendmsg(2) of Header and Body with its descriptors in SCM_RIGHTS; here the
// descriptor numbers are made up, as the Decoder only counts and
// attributes them.
func ExampleEncodeBatch() {
	items := []wire.Item{
		{Kind: kinds.TCPListener, Name: "http", Meta: wire.Meta{{Key: "addr", Value: ":8080"}}},
		{Kind: kinds.UDP, Name: "dns", Payload: []byte("state")},
	}
	_, frames, err := wire.EncodeBatch(nil, items, nil, wire.HeadFlagAck, wire.Limits{})
	if err != nil {
		log.Fatal(err)
	}

	d := wire.NewDecoder(wire.Limits{}, true) // true: a SOCK_SEQPACKET socket
	fds := []int{7, 8}
	for _, f := range frames {
		h, err := wire.ParseHeader(f.Header, wire.Limits{})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s frame: %d body bytes, %d descriptors\n", h.Type, len(f.Body), f.NFDs)
		if err := d.Feed(slices.Concat(f.Header, f.Body), fds[:f.NFDs]); err != nil {
			log.Fatal(err)
		}
		fds = fds[f.NFDs:]
	}
	m, ok := d.Next()
	if !ok {
		log.Fatal("no message")
	}
	for i, it := range m.Items {
		fmt.Printf("%s %s fd %d meta %v payload %q\n", it.Kind, it.Name, m.FDs[i], it.Meta, it.Payload)
	}
	// Output:
	// HEAD frame: 24 body bytes, 0 descriptors
	// DATA frame: 45 body bytes, 2 descriptors
	// tcp-listener http fd 7 meta [{addr :8080}] payload ""
	// udp dns fd 8 meta [] payload "state"
}

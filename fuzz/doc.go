// Package fuzz holds the project's native Go fuzz targets. It has no API:
// the targets live in its test files, and their seed corpora in
// testdata/fuzz/<Target>/.
//
// # Targets
//
//   - FuzzParseFrames: raw bytes, cut into reads that each carry a fuzzed
//     number of fake descriptors, through wire.Decoder (package unixmsg/wire) on a stream and on
//     a message socket, with the default limits and with small ones. Every
//     descriptor fed comes back exactly once, every error wraps a sentinel,
//     every decoded batch respects the limits and encodes back.
//   - FuzzRoundTrip: items built from the input; whatever wire.EncodeBatch
//     accepts decodes back equal, frame by frame and as a stream cut at
//     fuzzed points; records round-trip through AppendRecords and
//     ParseRecords.
//   - FuzzReceive (Linux): fuzzed bytes and real descriptors of the wrong
//     kinds and counts sent with raw sendmsg(2) over a socketpair, received
//     with unixmsg.Conn; every Receive yields an error or a valid batch, and
//     the process's open-descriptor count comes back to where it started.
//   - FuzzVerifyAll (Linux): kinds.VerifyAll on batches of 1,024 to 8,192
//     descriptors: sockets (read through io_uring once they take 4,096
//     system calls' worth, checked one at a time below that), files,
//     directories, devices and namespaces (one at a time, spread over the
//     goroutines), with TCP and UDP sockets between them, some declared
//     wrongly and some numbers not open; it answers as kinds.Verify does
//     one descriptor at a time, and no descriptor is left open.
//   - FuzzParseControl: wire.ParseControl on arbitrary control buffers.
//   - FuzzHandoffMessage: the graceful handoff-message parser, with a
//     parse, append, parse round trip; every message type, UPGRADE and
//     UPGRADED included.
//   - FuzzConnPayload: the payload codec of a migrated connection (its
//     state and unread bytes).
//   - FuzzMigrateReceive (Linux): the successor's side of a migration
//     (migrate.Tracker.Receive) against fuzzed CONNS batches with real
//     descriptors, whose counts and totals need not agree, checked against
//     a model of HANDOFF.md.
//   - FuzzHandoffSuccessor, FuzzHandoffPredecessor (Linux): a real
//     successor (New, Listen, Ready) and a real predecessor against a fake
//     peer sending a fuzzed sequence of handoff messages: the order of the
//     messages, checked against a model of HANDOFF.md.
//   - FuzzHTTPAdopt (Linux): graceful's HTTPServer adopting migrated
//     connections with fuzzed state, unread bytes and labels.
//   - FuzzRequestUpgrade (Linux): graceful.RequestUpgrade against a fake
//     running process answering with fuzzed bytes.
//
// Other packages hold the targets of parsers they do not export:
// FuzzCustom (Meta.Custom's bounded gob decoding) and FuzzOffer (what a
// successor takes of an OFFER) in graceful, FuzzParse in
// internal/handoffmsg, FuzzDecodeSession in examples/chat.
//
// # Running
//
// go test ./fuzz replays the seed corpora (and any regression entries) as
// ordinary tests. To fuzz one target, for as long as you like:
//
//	go test ./fuzz -run '^$' -fuzz '^FuzzParseFrames$' -fuzztime 10m
//
// .ci/fuzz runs every fuzz target of the module, in every package, in
// turn, for a time of its own (about 6 minutes in all; $FUZZTIME, when
// set, for each). A finding is written to testdata/fuzz/<Target>/<hash> in
// the target's package; commit it with the fix, and it stays as a
// regression entry that go test replays. After a change to the wire
// format, regenerate the named seed files with
//
//	go test ./fuzz -run '^TestCorpus$' -update-corpus
package fuzz

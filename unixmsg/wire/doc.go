// Package wire encodes and parses the frames that package unixmsg speaks on
// a unix socket: the frame header, the HEAD that opens a batch, the records
// that describe its items, the ACK that answers it, and the SCM_RIGHTS
// control messages that carry its descriptors. unixmsg/PROTOCOL.md
// specifies the format byte by byte; this package is its reference
// implementation, for unixmsg itself, for other implementations and for
// the fuzz targets.
//
// Encoders and parsers come in pairs: [AppendHeader] and [ParseHeader],
// [AppendHead] and [ParseHead], [AppendRecords] and [ParseRecords],
// [AppendAck] and [ParseAck], [EncodeBatch] and [Decoder]. Every parser
// checks lengths and counts against [Limits] before it allocates for them,
// never panics, and returns errors that wrap this package's sentinels.
//
// Nothing here makes a system call, and nothing closes a descriptor: a
// [Decoder] counts and attributes the descriptor numbers it is fed, and
// hands back whatever it has not delivered in a [Message] through
// [Decoder.Drain], for the caller to close. To send and receive batches,
// use package unixmsg.
package wire

// Package kinds says what a descriptor is and converts it to and from Go
// values.
//
// A [Kind] is detected from the descriptor itself (fstat, the SO_DOMAIN,
// SO_TYPE, SO_PROTOCOL and SO_ACCEPTCONN socket options, the namespace
// ioctl), never from what a peer claims. fdpass sends the kind with every
// descriptor and the receiver checks it with [Verify].
//
// # Taxonomy
//
//	TCPListener   listening TCP socket (IPv4 or IPv6)
//	TCPConn       connected TCP socket
//	UDP           UDP socket, connected or not
//	UnixListener  listening unix stream or seqpacket socket
//	UnixConn      unix stream or seqpacket socket that is not listening
//	UnixDatagram  unix datagram socket
//	File          regular file, directory, FIFO or character device
//	NetNS         network-namespace handle (nsfs)
//	Other         anything else (eventfd, pidfd, epoll, netlink, ...),
//	              passed through untyped
//
// # Conversion
//
// The To* functions take ownership of a raw descriptor and return a Go value
// for it, checking first that the descriptor is of a kind that value can
// serve. Where Go's net package duplicates the descriptor (listeners,
// conns, packet conns) the original is closed; either way, on success and
// on error, the caller has nothing left to close but the value.
// [ToValues] converts many at once, in parallel and with fewer system
// calls per socket than one at a time. [FromValue] goes the other way and
// returns a duplicate, so the Go value stays the caller's.
//
// # Network namespaces
//
// A socket stays in the network namespace where it was created, wherever its
// descriptor goes. [SocketNetNS] reports that namespace's identity (SIOCGSKNS,
// which needs CAP_NET_ADMIN); [CurrentNetNS] reports the calling thread's.
//
// # Platforms
//
// Detection and namespaces are Linux-only; elsewhere they return
// [ErrUnsupported]. Conversion works on every Unix system.
package kinds

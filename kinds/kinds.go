package kinds

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"

	"github.com/fdpass/fdpass/fd"
	"github.com/vishvananda/netns"
)

// Kind is what a descriptor is. The zero value, Invalid, is never a valid
// kind on the wire.
type Kind uint8

// The kinds. Their numeric values are part of the wire format and never
// change.
const (
	Invalid      Kind = 0
	TCPListener  Kind = 1
	TCPConn      Kind = 2
	UDP          Kind = 3
	UnixListener Kind = 4
	UnixConn     Kind = 5
	UnixDatagram Kind = 6
	File         Kind = 7
	NetNS        Kind = 8
	Other        Kind = 9

	maxKind = Other
)

var kindNames = [...]string{
	Invalid:      "invalid",
	TCPListener:  "tcp-listener",
	TCPConn:      "tcp-conn",
	UDP:          "udp",
	UnixListener: "unix-listener",
	UnixConn:     "unix-conn",
	UnixDatagram: "unix-datagram",
	File:         "file",
	NetNS:        "netns",
	Other:        "other",
}

func (k Kind) String() string {
	if k <= maxKind {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Valid reports whether k is one of the defined kinds other than Invalid.
func (k Kind) Valid() bool { return k != Invalid && k <= maxKind }

// IsSocket reports whether descriptors of kind k are sockets.
func (k Kind) IsSocket() bool { return k >= TCPListener && k <= UnixDatagram }

// Errors.
var (
	// ErrUnsupported is returned where a feature is Linux-only. It wraps
	// errors.ErrUnsupported.
	ErrUnsupported = fmt.Errorf("kinds: %w on this platform", errors.ErrUnsupported)
	// ErrMismatch is returned when a descriptor is not of the expected kind.
	ErrMismatch = errors.New("kinds: descriptor is not of the declared kind")
	// ErrConvert is returned when a descriptor cannot become the requested
	// Go value (a UDP socket asked for as a net.Listener, say).
	ErrConvert = errors.New("kinds: descriptor cannot be converted to that type")
)

// Info describes a descriptor.
type Info struct {
	Kind Kind
	// Family, Type and Protocol are the socket's SO_DOMAIN, SO_TYPE and
	// SO_PROTOCOL (AF_INET, SOCK_STREAM, IPPROTO_TCP, ...); zero for
	// descriptors that are not sockets.
	Family, Type, Protocol int
	// Mode holds the file type bits of st_mode (S_IFREG, S_IFDIR, ...).
	Mode uint32
}

// Network returns the Go network name for a socket ("tcp4", "tcp6", "udp4",
// "udp6", "unix", "unixpacket", "unixgram"), or "" for other descriptors.
func (i Info) Network() string {
	switch i.Kind {
	case TCPListener, TCPConn:
		return "tcp" + ipSuffix(i.Family)
	case UDP:
		return "udp" + ipSuffix(i.Family)
	case UnixListener, UnixConn:
		if i.Type == sockSeqpacket {
			return "unixpacket"
		}
		return "unix"
	case UnixDatagram:
		return "unixgram"
	}
	return ""
}

func ipSuffix(family int) string {
	switch family {
	case afInet:
		return "4"
	case afInet6:
		return "6"
	}
	return ""
}

// MismatchError reports a descriptor whose real kind differs from the
// expected one. It matches ErrMismatch with errors.Is; errors.As gives a
// caller that wants to say or act on what the descriptor really is its
// Want and Got.
type MismatchError struct {
	Want, Got Kind
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("kinds: descriptor is %s, declared %s", e.Got, e.Want)
}

// Is reports whether target is ErrMismatch.
func (e *MismatchError) Is(target error) bool { return target == ErrMismatch }

// Verify checks that the raw descriptor fd is of kind want, and returns a
// *MismatchError (matching ErrMismatch) when it is not. It asks the kernel
// only what it must to tell want apart from every other kind, so it is
// cheaper than Detect. fd is not affected. It checks one descriptor that
// arrived by other means than a unixmsg batch (which VerifyAll checks), such
// as one inherited from a parent.
func Verify(fd int, want Kind) error {
	if !want.Valid() {
		return &MismatchError{Want: want, Got: Invalid}
	}
	return verify(fd, want)
}

// Detect reports what the raw descriptor fd is. fd is not affected.
func Detect(fd int) (Info, error) { return detect(fd) }

// FromValue returns a duplicate of the descriptor behind v and what it is.
// v may be a net.Listener, net.Conn, net.PacketConn, *os.File, netns.NsHandle
// or any syscall.Conn. The duplicate is close-on-exec and belongs to the
// caller; closing it does not affect v, and closing v does not affect it.
func FromValue(v any) (int, Info, error) {
	var nfd int
	var err error
	if h, ok := v.(netns.NsHandle); ok {
		nfd, err = fd.DupFD(int(h))
	} else {
		nfd, err = fd.Dup(v)
	}
	if err != nil {
		return -1, Info{}, err
	}
	if info, ok := infoOfValue(v); ok {
		return nfd, info, nil
	}
	info, err := Detect(nfd)
	if err != nil {
		fd.Close(nfd)
		return -1, Info{}, err
	}
	return nfd, info, nil
}

// ValueKind returns the kind of the descriptor behind v when v's Go type
// tells it without a system call: the net package's TCP and UDP types, and
// Kinded values. Otherwise ok is false; Detect on the descriptor tells.
func ValueKind(v any) (k Kind, ok bool) {
	info, ok := infoOfValue(v)
	return info.Kind, ok
}

// infoOfValue names the kind of the sockets the net package makes from
// their Go type and address, saving the five system calls of Detect
// (Batch.Add of 10,000 connections spends most of its time there). The
// receiver checks kinds from the descriptors anyway. MPTCP sockets report
// IPPROTO_TCP here.
func infoOfValue(v any) (Info, bool) {
	info := Info{Mode: sIFSOCK}
	switch c := v.(type) {
	case *net.TCPListener:
		info.Kind, info.Type, info.Protocol = TCPListener, sockStream, ipprotoTCP
		info.Family = ipFamily(c.Addr())
	case *net.TCPConn:
		info.Kind, info.Type, info.Protocol = TCPConn, sockStream, ipprotoTCP
		info.Family = ipFamily(c.LocalAddr())
	case *net.UDPConn:
		info.Kind, info.Type, info.Protocol = UDP, sockDgram, ipprotoUDP
		info.Family = ipFamily(c.LocalAddr())
	case Kinded:
		return Info{Kind: c.DescriptorKind()}, c.DescriptorKind().Valid()
	default:
		return Info{}, false
	}
	return info, info.Family != 0
}

// Kinded is implemented by values that know what their descriptor is (a
// wrapper around a socket it made or adopted, say). FromValue takes their
// word instead of asking the kernel: a sender's own values are not a peer's
// claims, and a receiver checks kinds from the descriptors anyway.
type Kinded interface {
	DescriptorKind() Kind
}

func ipFamily(a net.Addr) int {
	var ip net.IP
	switch a := a.(type) {
	case *net.TCPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	default:
		return 0
	}
	if ip.To4() != nil {
		return afInet
	}
	if len(ip) == net.IPv6len {
		return afInet6
	}
	return 0
}

// ToFile returns an *os.File that owns the raw descriptor fd, named name.
// Any kind converts to a file.
func ToFile(fd int, name string) *os.File {
	return os.NewFile(uintptr(fd), name)
}

// ToListener takes ownership of the raw descriptor fd, a listening TCP or
// unix socket, and returns a net.Listener for it. The listener holds its
// own descriptor (net.FileListener works on a duplicate) and fd is closed,
// on success and on error alike. A descriptor of another kind is
// ErrConvert.
func ToListener(fd int) (net.Listener, error) {
	f, err := toFile(fd, "net.Listener", TCPListener, UnixListener)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("%w: net.Listener: %w", ErrConvert, err)
	}
	return ln, nil
}

// ToConn takes ownership of the raw descriptor fd, a connected TCP or unix
// stream socket, and returns a net.Conn for it. The conn holds its own
// descriptor and fd is closed, on success and on error alike. A descriptor
// of another kind is ErrConvert.
func ToConn(fd int) (net.Conn, error) {
	f, err := toFile(fd, "net.Conn", TCPConn, UnixConn)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("%w: net.Conn: %w", ErrConvert, err)
	}
	return c, nil
}

// ToPacketConn takes ownership of the raw descriptor fd, a UDP or unix
// datagram socket, and returns a net.PacketConn for it. The conn holds its
// own descriptor and fd is closed, on success and on error alike. A
// descriptor of another kind is ErrConvert.
func ToPacketConn(fd int) (net.PacketConn, error) {
	f, err := toFile(fd, "net.PacketConn", UDP, UnixDatagram)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("%w: net.PacketConn: %w", ErrConvert, err)
	}
	return c, nil
}

// toFile checks that fd is one of the kinds want (Go's net.File* functions
// do not check that a socket listens, or is connected) and wraps it in an
// *os.File; on error fd is closed.
func toFile(fd int, what string, want ...Kind) (*os.File, error) {
	err := Verify(fd, want[0])
	var me *MismatchError
	if errors.As(err, &me) && me.Got == want[1] {
		err = nil
	}
	if err != nil {
		closeFD(fd)
		return nil, fmt.Errorf("%w: %s: %w", ErrConvert, what, err)
	}
	return os.NewFile(uintptr(fd), what), nil
}

// ToNsHandle takes ownership of the raw descriptor fd, a network-namespace
// handle, and returns it as a netns.NsHandle, which the caller closes with
// its Close method. On error fd is closed.
func ToNsHandle(fd int) (netns.NsHandle, error) {
	if err := Verify(fd, NetNS); err != nil {
		closeFD(fd)
		return netns.None(), fmt.Errorf("%w: netns.NsHandle: %w", ErrConvert, err)
	}
	return netns.NsHandle(fd), nil
}

func closeFD(n int) { _ = fd.Close(n) }

// ToValue takes ownership of the raw descriptor fd and returns the Go value
// that suits its kind: net.Listener for listeners, net.Conn for connected
// stream sockets, net.PacketConn for UDP and unix datagram sockets,
// netns.NsHandle for namespaces and *os.File for everything else. On error
// fd is closed. It is ToValues for one descriptor, for a caller that gets
// them one at a time.
func ToValue(fd int, k Kind, name string) (any, error) {
	switch k {
	case TCPListener, UnixListener:
		return ToListener(fd)
	case TCPConn, UnixConn:
		return ToConn(fd)
	case UDP, UnixDatagram:
		return ToPacketConn(fd)
	case NetNS:
		return ToNsHandle(fd)
	}
	return ToFile(fd, name), nil
}

// ToValues is ToValue for many descriptors: fds[i] of kind ks[i], named
// names[i] for an *os.File (names may be nil). It takes ownership of every
// descriptor and returns the values in order; on error it closes every
// descriptor and every value made, and names the first item that failed.
// On Linux the sockets are converted on one goroutine per processor, each
// through a descriptor slot of its own rather than an *os.File per socket
// (eight system calls a socket instead of ToListener's eleven), and their
// original descriptors are closed in runs. It needs a few dozen
// descriptors beyond those it is given: when the process runs out
// meanwhile, it closes the originals it holds and tries again.
func ToValues(fds []int, ks []Kind, names []string) ([]any, error) {
	if len(ks) != len(fds) || (names != nil && len(names) != len(fds)) {
		for _, f := range fds {
			closeFD(f)
		}
		return nil, fmt.Errorf("kinds: ToValues: %d descriptors, %d kinds, %d names", len(fds), len(ks), len(names))
	}
	return toValues(fds, ks, names, true)
}

// ToValuesVerified is ToValues for descriptors whose kinds have been
// checked already, by VerifyAll or Verify, or by unixmsg on receipt: it
// does not check them again, which saves a system call a socket. A
// descriptor that is not of its kind after all fails to convert, or
// converts to a value that does not work (a listener on a connected
// socket, say): use it only on what was verified.
func ToValuesVerified(fds []int, ks []Kind, names []string) ([]any, error) {
	if len(ks) != len(fds) || (names != nil && len(names) != len(fds)) {
		for _, f := range fds {
			closeFD(f)
		}
		return nil, fmt.Errorf("kinds: ToValuesVerified: %d descriptors, %d kinds, %d names", len(fds), len(ks), len(names))
	}
	return toValues(fds, ks, names, false)
}

func nameAt(names []string, i int) string {
	if names == nil {
		return ""
	}
	return names[i]
}

// closeValues closes what ToValue made.
func closeValues(vals []any) {
	for _, v := range vals {
		switch v := v.(type) {
		case io.Closer:
			v.Close()
		case netns.NsHandle:
			v.Close()
		}
	}
}

// VerifyAll checks that each fds[i] is of kind want[i], as Verify does, and
// returns the index of the first descriptor that is not, with its error, or
// -1 and nil. One at a time, a TCP or UDP socket takes one getsockopt(2),
// other kinds a few calls each. On Linux, when the checks one at a time
// take 512 system calls or more, they are spread over GOMAXPROCS
// goroutines; and where the kernel allows it (Linux 6.7 and later), the
// descriptors declared sockets are read through io_uring, hundreds per
// system call, when checking them one at a time would take 4,096 system
// calls or more (one for each TCP or UDP socket, four for each other
// socket). No descriptor is affected: a socket's check through the ring
// peeks at no data (a receive of no bytes).
func VerifyAll(fds []int, want []Kind) (int, error) {
	if len(want) != len(fds) {
		return 0, fmt.Errorf("kinds: VerifyAll: %d descriptors, %d kinds", len(fds), len(want))
	}
	return verifyAll(fds, want)
}

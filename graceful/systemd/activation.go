package systemd

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/fdpass/fdpass/fd"
	"github.com/fdpass/fdpass/kinds"
)

// The environment of sd_listen_fds(3).
const (
	envListenPID     = "LISTEN_PID"
	envListenFDs     = "LISTEN_FDS"
	envListenFDNames = "LISTEN_FDNAMES"

	// listenFDsStart is SD_LISTEN_FDS_START: systemd passes descriptors
	// from 3 up.
	listenFDsStart = 3
)

// UnknownName is the name of a descriptor that systemd passed without
// LISTEN_FDNAMES, as sd_listen_fds_with_names(3) calls it.
const UnknownName = "unknown"

// Descriptor describes one descriptor that systemd passed.
type Descriptor struct {
	// FD is the descriptor number. While the descriptor is in a Set it
	// belongs to the Set; a Take method hands it over.
	FD int
	// Name is the descriptor's entry in LISTEN_FDNAMES: the socket unit's
	// FileDescriptorName= (by default the socket unit's name), or the
	// FDNAME= it was stored under. Several descriptors may share a name.
	// UnknownName when systemd passed no names.
	Name string
	// Info is what the descriptor is, detected with kinds.Detect when the
	// Set was made.
	Info kinds.Info
	// Addr is a socket's local address (*net.TCPAddr, *net.UDPAddr or
	// *net.UnixAddr); nil for other descriptors.
	Addr net.Addr
}

// Set holds the descriptors systemd passed to this process. It owns every
// descriptor until a Take method or Match hands it to the caller; Close
// closes the ones nobody took. A Set is safe for concurrent use. The nil
// *Set is an empty Set.
//
// Get a Set once per process, with Activation, and keep it: Activation
// clears the environment it reads, so a second call finds nothing.
type Set struct {
	mu     sync.Mutex
	closed bool
	ds     []Descriptor
	taken  []bool
}

// Activation returns the descriptors that systemd (or any launcher speaking
// sd_listen_fds(3), such as systemd-socket-activate) passed to this
// process: LISTEN_FDS descriptors from 3 up, named by LISTEN_FDNAMES, if
// LISTEN_PID is this process's PID. Each one becomes close-on-exec, so
// child processes do not inherit it, and its kind is detected.
//
// Activation always unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, as
// sd_listen_fds(3) does when asked to: once the descriptors belong to a
// Set, a second reading of the variables, in this process or in a child,
// must not find descriptor numbers that the Set may since have closed and
// the process reused. So call Activation once and share the Set; a second
// call returns an empty Set.
//
// Nothing passed (no LISTEN_PID, a LISTEN_PID of another process, LISTEN_FDS
// of 0) is an empty Set and no error. Malformed variables (LISTEN_FDNAMES
// with more or fewer names than descriptors, say) are ErrEnvironment; then,
// if LISTEN_PID was this process's, the passed descriptors are closed,
// since nothing else can find them once the variables are gone. On
// platforms other than Linux, passed descriptors are ErrUnsupported.
func Activation() (*Set, error) {
	n, names, err := listenEnv()
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return &Set{}, nil
	}
	fds := make([]int, n)
	for i := range fds {
		fds[i] = listenFDsStart + i
	}
	return newSet(fds, names)
}

// listenEnv reads and unsets the variables of sd_listen_fds(3). It returns
// the number of descriptors passed to this process and their names (nil
// when LISTEN_FDNAMES is unset).
func listenEnv() (int, []string, error) {
	pidS, hasPID := os.LookupEnv(envListenPID)
	nS, hasN := os.LookupEnv(envListenFDs)
	namesS, hasNames := os.LookupEnv(envListenFDNames)
	os.Unsetenv(envListenPID)
	os.Unsetenv(envListenFDs)
	os.Unsetenv(envListenFDNames)
	if !hasPID {
		return 0, nil, nil
	}
	pid, err := strconv.Atoi(pidS)
	if err != nil || pid <= 0 {
		return 0, nil, fmt.Errorf("%w: %s=%q", ErrEnvironment, envListenPID, pidS)
	}
	if pid != os.Getpid() {
		// Meant for another process (our parent, say, whose environment
		// we inherited): not ours to touch.
		return 0, nil, nil
	}
	if !hasN {
		return 0, nil, nil
	}
	// The bound keeps 3+n an int and far below any descriptor limit.
	n, err := strconv.Atoi(nS)
	if err != nil || n < 0 || n > 1<<24 {
		return 0, nil, fmt.Errorf("%w: %s=%q", ErrEnvironment, envListenFDs, nS)
	}
	var names []string
	if hasNames {
		names = strings.Split(namesS, ":")
	}
	return n, names, nil
}

// newSet makes a Set of fds, named names (nil: UnknownName), taking
// ownership of them. On error it closes them, up to the first that is not
// open: descriptors after a missing one are not trusted to be ours.
func newSet(fds []int, names []string) (*Set, error) {
	if !supported {
		return nil, fmt.Errorf("%w: %s", ErrUnsupported, envListenFDs)
	}
	// Close-on-exec first, so that no error path below leaks one into a
	// child process started meanwhile. It also proves each is open.
	for i, f := range fds {
		if err := closeOnExec(f); err != nil {
			closePassed(fds[:i])
			return nil, fmt.Errorf("%w: passed descriptor %d: %w", ErrEnvironment, f, err)
		}
	}
	if names != nil && len(names) != len(fds) {
		closePassed(fds)
		return nil, fmt.Errorf("%w: %s has %d names for %d descriptors", ErrEnvironment, envListenFDNames, len(names), len(fds))
	}
	s := &Set{ds: make([]Descriptor, len(fds)), taken: make([]bool, len(fds))}
	for i, f := range fds {
		d, err := describe(f)
		if err != nil {
			closePassed(fds)
			return nil, fmt.Errorf("systemd: passed descriptor %d: %w", f, err)
		}
		d.Name = UnknownName
		if names != nil {
			d.Name = names[i]
		}
		s.ds[i] = d
	}
	return s, nil
}

func closePassed(fds []int) { _ = fd.CloseAll(fds) }

// Descriptors returns the descriptors the Set still holds, in the order
// systemd passed them. They remain the Set's: use a Take method or Match to
// own one. Calling it again returns the same list, less what was taken
// meanwhile.
func (s *Set) Descriptors() []Descriptor {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	var out []Descriptor
	for i, d := range s.ds {
		if !s.taken[i] {
			out = append(out, d)
		}
	}
	return out
}

// Take hands over the first descriptor named name that the Set still
// holds. Its FD is the caller's to close from now on; the Set forgets it.
// A name whose descriptors were all taken is ErrTaken, a name that was never
// passed ErrNotFound, a closed Set net.ErrClosed.
func (s *Set) Take(name string) (Descriptor, error) {
	return s.take(&name, "descriptor", func(*Descriptor) bool { return true })
}

// TakeListener hands over the first listening TCP or unix socket named name
// as a net.Listener, which is the caller's; the Set keeps nothing of it.
// Errors are Take's, and ErrNotFound when descriptors of that name exist but
// none listens. If the conversion fails the descriptor is closed; it stays
// taken.
func (s *Set) TakeListener(name string) (net.Listener, error) {
	d, err := s.take(&name, "listener", func(d *Descriptor) bool {
		return d.Info.Kind == kinds.TCPListener || d.Info.Kind == kinds.UnixListener
	})
	if err != nil {
		return nil, err
	}
	return kinds.ToListener(d.FD)
}

// TakePacketConn hands over the first UDP or unix datagram socket named
// name as a net.PacketConn, which is the caller's; the Set keeps nothing of
// it. Errors are TakeListener's.
func (s *Set) TakePacketConn(name string) (net.PacketConn, error) {
	d, err := s.take(&name, "packet socket", func(d *Descriptor) bool {
		return d.Info.Kind == kinds.UDP || d.Info.Kind == kinds.UnixDatagram
	})
	if err != nil {
		return nil, err
	}
	return kinds.ToPacketConn(d.FD)
}

// TakeFile hands over the first descriptor named name, of any kind, as an
// *os.File that owns it. Errors are Take's.
func (s *Set) TakeFile(name string) (*os.File, error) {
	d, err := s.take(&name, "descriptor", func(*Descriptor) bool { return true })
	if err != nil {
		return nil, err
	}
	return kinds.ToFile(d.FD, name), nil
}

// Match hands over the first descriptor the Set holds that is a socket of
// kind k on network with local address addr, in the terms of net.Listen and
// net.ListenPacket: network "tcp" matches IPv4 and IPv6 sockets, "tcp4"
// and "tcp6" only their own; an empty or unspecified host ("", "0.0.0.0",
// "::") matches a socket bound to an unspecified address, IPv4 or IPv6; a
// host name is resolved as net.ResolveTCPAddr does; port 0 matches nothing;
// unix addresses ("/path", "@abstract") match exactly. The descriptor's FD
// is the caller's to close from now on.
//
// Names play no part here: this is how an inherit-or-create API finds what
// systemd passed for Listen("tcp", ":8080"). Nothing that matches is
// ErrNotFound; only taken ones, ErrTaken; a closed Set, net.ErrClosed; an
// unknown network or an address that does not resolve for network (an
// IPv4 literal for "tcp6", say), the *net.AddrError or resolver error.
func (s *Set) Match(k kinds.Kind, network, addr string) (Descriptor, error) {
	what := fmt.Sprintf("%s %s %s", k, network, addr)
	fits, err := matcher(k, network, addr)
	if err != nil {
		return Descriptor{FD: -1}, err
	}
	return s.take(nil, what, fits)
}

// take hands over the first held descriptor named *name (any name if name
// is nil) for which fits is true.
func (s *Set) take(name *string, what string, fits func(*Descriptor) bool) (Descriptor, error) {
	none := Descriptor{FD: -1}
	if name != nil {
		what = fmt.Sprintf("%s named %q", what, *name)
	}
	if s == nil {
		return none, fmt.Errorf("%w: %s", ErrNotFound, what)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return none, net.ErrClosed
	}
	taken, other := false, kinds.Invalid
	for i := range s.ds {
		d := &s.ds[i]
		if name != nil && d.Name != *name {
			continue
		}
		if !fits(d) {
			other = d.Info.Kind
			continue
		}
		if s.taken[i] {
			taken = true
			continue
		}
		s.taken[i] = true
		return *d, nil
	}
	switch {
	case taken:
		return none, fmt.Errorf("%w: %s", ErrTaken, what)
	case name != nil && other != kinds.Invalid:
		return none, fmt.Errorf("%w: %s (it is a %s)", ErrNotFound, what, other)
	}
	return none, fmt.Errorf("%w: %s", ErrNotFound, what)
}

// Close closes every descriptor the Set still holds; what was taken is
// not affected. After Close the Set holds nothing and Take methods return
// net.ErrClosed. Closing a closed Set does nothing.
func (s *Set) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var fds []int
	for i, d := range s.ds {
		if !s.taken[i] {
			fds = append(fds, d.FD)
			s.taken[i] = true
		}
	}
	return fd.CloseAll(fds)
}

// matcher returns the test Match applies.
func matcher(k kinds.Kind, network, addr string) (func(*Descriptor) bool, error) {
	never := func(*Descriptor) bool { return false }
	netFits := func(have string) bool { return have == network }
	switch network {
	case "tcp", "udp":
		netFits = func(have string) bool { return strings.HasPrefix(have, network) }
	}
	switch network {
	case "unix", "unixpacket", "unixgram":
		return func(d *Descriptor) bool {
			a, ok := d.Addr.(*net.UnixAddr)
			return d.Info.Kind == k && netFits(d.Info.Network()) && ok && a.Name != "" && a.Name == addr
		}, nil
	case "tcp", "tcp4", "tcp6":
		ta, err := net.ResolveTCPAddr(network, addr)
		if err != nil {
			return nil, err
		}
		if ta.Port == 0 {
			return never, nil
		}
		return func(d *Descriptor) bool {
			a, ok := d.Addr.(*net.TCPAddr)
			return d.Info.Kind == k && netFits(d.Info.Network()) && ok && a.Port == ta.Port && ipFits(ta.IP, a.IP)
		}, nil
	case "udp", "udp4", "udp6":
		ua, err := net.ResolveUDPAddr(network, addr)
		if err != nil {
			return nil, err
		}
		if ua.Port == 0 {
			return never, nil
		}
		return func(d *Descriptor) bool {
			a, ok := d.Addr.(*net.UDPAddr)
			return d.Info.Kind == k && netFits(d.Info.Network()) && ok && a.Port == ua.Port && ipFits(ua.IP, a.IP)
		}, nil
	}
	return nil, &net.AddrError{Err: "unknown network", Addr: network}
}

// ipFits reports whether a socket bound to have serves what a listener on
// want would: the same address, or any unspecified address for an
// unspecified want.
func ipFits(want, have net.IP) bool {
	if want == nil || want.IsUnspecified() {
		return have.IsUnspecified()
	}
	return want.Equal(have)
}

package graceful

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// A successor does not take its predecessor's word for what a socket is:
// before Listen or ListenPacket adopts an inherited socket, its kind has
// been checked on receipt (unixmsg), and here its bound address is held
// against the address it is labelled with (and its type or family
// against the network: SOCK_SEQPACKET for unixpacket, AF_INET for tcp4),
// and its network namespace, where the kernel tells, against the one
// asked for: for this process's own namespace (Listen, ListenPacket) by
// the namespace's cookie (SO_NETNS_COOKIE), else by its identity
// (SIOCGSKNS, which needs CAP_NET_ADMIN). A socket that does not match is
// left unused (and closed at Ready); Listen then creates one.

// nsAnswer says whether a socket was created in this process's network
// namespace, as its cookie tells (ownNetNS.homes).
type nsAnswer int8

const (
	nsUnknown   nsAnswer = iota // the kernel did not say
	nsHere                      // in this process's namespace
	nsElsewhere                 // in another
)

// checkSocket returns why v, an inherited listener or packet socket
// labelled network and addr, does not match, or nil. want is the network
// namespace Listen asks for; own is this process's, and home whether v's
// socket is in it.
func checkSocket(v any, network, addr, want string, own ownNetNS, home nsAnswer) error {
	var local net.Addr
	switch v := v.(type) {
	case net.Listener:
		local = v.Addr()
	case net.PacketConn:
		local = v.LocalAddr()
	default:
		return nil
	}
	if err := checkAddr(local, network, addr); err != nil {
		return err
	}
	if want != "" && want == own.id && home != nsUnknown {
		if home == nsElsewhere {
			return fmt.Errorf("in another network namespace than this process's (%s)", want)
		}
		return nil
	}
	if want != "" {
		if got := socketNetNS(v, ""); got != "" && got != want {
			return fmt.Errorf("in network namespace %s, not %s", got, want)
		}
	}
	return nil
}

// checkAddr returns why local, the address a socket is bound to, is not
// the address addr (as given to Listen) names on network, or nil.
func checkAddr(local net.Addr, network, addr string) error {
	switch network {
	case "unix", "unixpacket", "unixgram":
		// The socket's type, which the kind does not tell apart for
		// listeners (a unix listener is SOCK_STREAM or SOCK_SEQPACKET).
		if local.Network() != network {
			return fmt.Errorf("a %s socket, labelled %s", local.Network(), network)
		}
		if local.String() != addr {
			return fmt.Errorf("bound to %q, labelled %q", local, addr)
		}
		return nil
	}
	// The socket's family: the net package gives an AF_INET socket's
	// address as 4 bytes, an AF_INET6 one's (v4-mapped too) as 16.
	var raw net.IP
	switch a := local.(type) {
	case *net.TCPAddr:
		raw = a.IP
	case *net.UDPAddr:
		raw = a.IP
	}
	switch {
	case strings.HasSuffix(network, "4") && len(raw) != net.IPv4len:
		return fmt.Errorf("an IPv6 socket bound to %s, labelled %s", local, network)
	case strings.HasSuffix(network, "6") && len(raw) != net.IPv6len:
		return fmt.Errorf("an IPv4 socket bound to %s, labelled %s", local, network)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("label %q: %w", addr, err)
	}
	got, err := netip.ParseAddrPort(local.String())
	if err != nil {
		return fmt.Errorf("bound to %q: %w", local, err)
	}
	if port != "0" {
		want, err := net.LookupPort(network, port)
		if err != nil {
			return fmt.Errorf("label %q: %w", addr, err)
		}
		if int(got.Port()) != want {
			return fmt.Errorf("bound to port %d, labelled %q", got.Port(), addr)
		}
	}
	ip := got.Addr().Unmap()
	if host == "" {
		if !ip.IsUnspecified() {
			return fmt.Errorf("bound to %s, labelled %q (all addresses)", got, addr)
		}
		return nil
	}
	if want, err := netip.ParseAddr(host); err == nil {
		if want.Unmap() != ip {
			return fmt.Errorf("bound to %s, labelled %q", got, addr)
		}
		return nil
	}
	// A name: one of its addresses, as Listen would have resolved it.
	ips, err := net.LookupIP(host)
	if err != nil {
		return fmt.Errorf("label %q: %w", addr, err)
	}
	for _, a := range ips {
		if w, ok := netip.AddrFromSlice(a); ok && w.Unmap() == ip {
			return nil
		}
	}
	return fmt.Errorf("bound to %s, which %q does not name", got, strconv.Quote(host))
}

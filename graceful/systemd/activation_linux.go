//go:build linux

package systemd

import (
	"net"
	"os"

	"github.com/fdpass/fdpass/kinds"
	"golang.org/x/sys/unix"
)

// supported reports whether this platform speaks systemd's protocols.
const supported = true

// closeOnExec sets FD_CLOEXEC on fd, which fails with EBADF if fd is not
// open.
func closeOnExec(fd int) error {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return os.NewSyscallError("fcntl", err)
	}
	return nil
}

// describe detects what fd is and, for a socket, its local address. fd is
// not affected.
func describe(fd int) (Descriptor, error) {
	info, err := kinds.Detect(fd)
	if err != nil {
		return Descriptor{}, err
	}
	d := Descriptor{FD: fd, Info: info}
	if !info.Kind.IsSocket() {
		return d, nil
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return Descriptor{}, os.NewSyscallError("getsockname", err)
	}
	d.Addr = sockaddrToAddr(sa, info)
	return d, nil
}

// sockaddrToAddr converts a local address as the net package reports it.
func sockaddrToAddr(sa unix.Sockaddr, info kinds.Info) net.Addr {
	var ip net.IP
	var port int
	var zone string
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		ip, port = net.IP(a.Addr[:]).To16(), a.Port
	case *unix.SockaddrInet6:
		ip, port = net.IP(a.Addr[:]), a.Port
		if a.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				zone = ifi.Name
			}
		}
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Name: a.Name, Net: info.Network()}
	default:
		return nil
	}
	if info.Kind == kinds.UDP {
		return &net.UDPAddr{IP: ip, Port: port, Zone: zone}
	}
	return &net.TCPAddr{IP: ip, Port: port, Zone: zone}
}

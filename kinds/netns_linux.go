//go:build linux

package kinds

import (
	"fmt"
	"net"
	"os"
	"runtime"

	"github.com/fdpass/fdpass/fd"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// SocketNetNS returns the identity of the network namespace that the socket
// fd was created in, which stays the same wherever its descriptor goes. It
// wraps the SIOCGSKNS ioctl, which needs CAP_NET_ADMIN over that namespace.
// fd is not affected.
func SocketNetNS(sock int) (fd.ID, error) {
	h, err := SocketNetNSHandle(sock)
	if err != nil {
		return fd.ID{}, err
	}
	defer h.Close()
	return fd.Identify(int(h))
}

// SocketNetNSHandle returns a handle on the network namespace that the
// socket fd was created in; the handle is the caller's to close. It wraps
// the SIOCGSKNS ioctl, which needs CAP_NET_ADMIN over that namespace. With
// the handle, InNetNS creates sockets beside one that was received, or
// passes the namespace on.
func SocketNetNSHandle(sock int) (netns.NsHandle, error) {
	nsfd, err := unix.IoctlRetInt(sock, unix.SIOCGSKNS)
	if err != nil {
		return netns.None(), os.NewSyscallError("ioctl SIOCGSKNS", err)
	}
	return netns.NsHandle(nsfd), nil
}

// CurrentNetNS returns the identity of the calling thread's network
// namespace. In a process that never moves a thread to another namespace
// every thread shares it.
func CurrentNetNS() (fd.ID, error) {
	h, err := netns.Get()
	if err != nil {
		return fd.ID{}, fmt.Errorf("kinds: current network namespace: %w", err)
	}
	defer h.Close()
	return fd.Identify(int(h))
}

// InNetNS runs fn on an OS thread switched into the network namespace h,
// then switches the thread back. Sockets fn creates belong to h for good,
// wherever their descriptors go. The thread is locked for the call; if
// switching back fails, it stays locked so that the goroutine's exit
// retires it instead of letting another goroutine run in the wrong
// namespace. Switching needs CAP_SYS_ADMIN. h stays the caller's.
func InNetNS(h netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("kinds: current network namespace: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("kinds: enter network namespace: %w", err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: it dies with the goroutine.
		return fmt.Errorf("kinds: leave network namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// ListenInNetNS is net.Listen run inside the network namespace h (see
// InNetNS). The listener is the caller's.
func ListenInNetNS(h netns.NsHandle, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := InNetNS(h, func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacketInNetNS is net.ListenPacket run inside the network namespace
// h (see InNetNS). The conn is the caller's. It is ListenInNetNS for
// datagram services (DNS, say) that a privileged process opens in another
// namespace and hands to a worker.
func ListenPacketInNetNS(h netns.NsHandle, network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := InNetNS(h, func() (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

//go:build linux

package kinds

import (
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netns"
)

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
// h (see InNetNS). The conn is the caller's.
func ListenPacketInNetNS(h netns.NsHandle, network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := InNetNS(h, func() (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

//go:build linux

package systemd

import (
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// sendTimeout bounds one notification: a service manager whose queue stays
// full this long is not reading it.
const sendTimeout = 5 * time.Second

// send writes one notification datagram from a fresh socket, as
// sd_notify(3) does, so no descriptor stays open between calls. The socket
// is connected and non-blocking: the write waits for room in the runtime's
// poller, bounded by sendTimeout, and parks no thread. (net.UnixConn's
// WriteMsgUnix refuses connected datagram sockets, hence the RawConn.)
func send(addr, state string, fds []int) error {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetWriteDeadline(time.Now().Add(sendTimeout)); err != nil {
		return err
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	var serr error
	err = rc.Write(func(s uintptr) bool {
		serr = unix.Sendmsg(int(s), []byte(state), oob, nil, unix.MSG_NOSIGNAL)
		return serr != unix.EAGAIN
	})
	if err == nil && serr != nil {
		err = os.NewSyscallError("sendmsg", serr)
	}
	if err != nil {
		return &net.OpError{Op: "write", Net: "unixgram", Addr: c.RemoteAddr(), Err: err}
	}
	return nil
}

// monotonicUsec returns CLOCK_MONOTONIC in microseconds, the clock
// MONOTONIC_USEC= is read against.
func monotonicUsec() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3
}

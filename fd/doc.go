// Package fd owns and duplicates raw file descriptors.
//
// It is the lowest layer of fdpass: the only place that turns Go values
// (net.Listener, net.Conn, net.PacketConn, *os.File or any syscall.Conn) into
// raw descriptors. Duplicates are made with F_DUPFD_CLOEXEC inside
// SyscallConn().Control, so the original keeps its non-blocking mode; the
// File().Fd() route would switch it to blocking mode.
//
// # Ownership
//
// Every function says whether it takes ownership of a descriptor or works on a
// duplicate. A duplicate returned to the caller is the caller's to close;
// closing it does not affect the original, and closing the original does not
// affect the duplicate.
//
// # Identity and counting
//
// [Identify] reports the device and inode behind a descriptor, which is what
// "the same open file" means for the checks in this module. [Count] reports
// how many descriptors the process has open; tests use it to prove that no
// path leaks one.
//
// # Platforms
//
// Linux is the target. Other Unix systems build and support everything here;
// [Count] reads /dev/fd there.
package fd

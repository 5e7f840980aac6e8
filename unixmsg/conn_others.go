//go:build !linux

package unixmsg

import (
	"net"
	"syscall"
)

func socketType(syscall.RawConn) (int, error)           { return 0, ErrUnsupported }
func socketPair() (*net.UnixConn, *net.UnixConn, error) { return nil, nil, ErrUnsupported }
func (c *Conn) recvOnce() (int, []int, bool, error)     { return 0, nil, false, ErrUnsupported }
func (c *Conn) writeFrame([]byte, []byte, []int) error  { return ErrUnsupported }
func (c *Conn) tryWrite([]byte)                         {}
func (c *Conn) reserveFDs(int)                          {}

func socketTypeAt(string) (int, bool) { return 0, false }

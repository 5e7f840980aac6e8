//go:build !linux

// Package rawsock wraps sendmsg(2) and recvmsg(2) on Linux.
package rawsock

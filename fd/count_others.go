//go:build !linux

package fd

const fdDir = "/dev/fd"

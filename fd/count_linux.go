//go:build linux

package fd

const fdDir = "/proc/self/fd"

//go:build !race

package proc

// race says that this binary runs under the race detector.
const race = false

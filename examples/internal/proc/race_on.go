//go:build race

package proc

// race says that this binary runs under the race detector; the examples
// are then built with it too, so that the code they run is raced.
const race = true

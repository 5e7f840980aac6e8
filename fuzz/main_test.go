package fuzz_test

import (
	"testing"

	"github.com/fdpass/fdpass/internal/childtest"
)

// TestMain warms the runtime up (the network poller) before the targets
// run, in a fuzzing worker too, so that FuzzReceive's first count compares
// like with like.
func TestMain(m *testing.M) { childtest.Main(m) }

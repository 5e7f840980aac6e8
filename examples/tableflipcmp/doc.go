// Package tableflipcmp compares a restart with package graceful against
// the same restart with github.com/cloudflare/tableflip (v1.2.3) and
// against the floor of a successor that merely inherits its listeners
// through exec. It holds only a benchmark, in a module of its own so that
// tableflip is not a dependency of fdpass:
//
//	cd examples/tableflipcmp
//	go test -run '^$' -bench . -benchtime 11x
//
// Each op of BenchmarkCompare/n=N hands N TCP listeners to a freshly
// started successor once with each of the three, in a rotating order, each
// in its own line of processes (see package internal/handoffbench):
//
//   - fdpass: the successor is started by the benchmark and calls
//     graceful.New, Listen for each address and Ready; the predecessor
//     sees Exit, closes its listeners and exits.
//   - tableflip: the predecessor is sent SIGHUP and calls Upgrade, which
//     starts the successor with the listeners inherited; the successor
//     calls tableflip.New, Fds.Listen for each address and Ready; the
//     predecessor sees Exit, closes its listeners and exits.
//   - floor: the predecessor is sent SIGHUP and starts the successor with
//     the listeners inherited (exec.Cmd.ExtraFiles); the successor turns
//     them into listeners with net.FileListener and says so on a pipe; the
//     predecessor closes its listeners and exits.
//
// A handoff is timed from just before the successor is started (or the
// signal sent) until the successor is ready and the predecessor has exited
// and been reaped. The benchmark reports the median of each over the ops
// (fdpass-ms, tableflip-ms, floor-ms), the ratios of the medians
// (fdpass/tableflip, fdpass/floor, tableflip/floor) and the medians of the
// fdpass successor's phases (fdpass-exec-ms until its main, fdpass-new-ms,
// fdpass-listen-ms, fdpass-ready-ms, fdpass-exit-ms until the predecessor
// was reaped); it logs every variant's median phases, its median from the
// successor's main on, and the successor's CPU time and page faults. Run
// at least 5 ops (-benchtime 5x), more on a busy machine.
package tableflipcmp

// Package handoffbench measures a handoff of listening sockets to a
// freshly started successor process, as a restart does in production: the
// benchmarks of package graceful and of examples/tableflipcmp share it, so
// that they measure the same scenario.
//
// A Chain is a line of generations of one service, each a separate process
// (the test binary re-run: its TestMain calls Main first). The first
// generation creates n TCP listeners on 127.0.0.1 (consecutive ports);
// every later one takes them over from its predecessor and, once it is
// ready and idle, is the predecessor of the next. One handoff is timed
// from just before the successor is started until the successor is ready
// and the predecessor process has exited and been reaped. The times come
// from CLOCK_MONOTONIC, which every process reads alike, so the
// successor's own phases (its start-up until main, then each step it
// marks) are reported beside the total. What a generation does after it is
// ready for the benchmark's sake alone (fdpass polls its descriptors until
// its background duplicates are made) waits until the handoff is timed
// (Role.Settles), so that it does not compete with the predecessor's exit.
//
// Variants:
//   - fdpass: the benchmark starts the successor, which calls graceful.New,
//     Listen for each address and Ready; the predecessor sees Exit,
//     closes its listeners and exits.
//   - floor: the predecessor, sent SIGHUP, starts the successor with the
//     listeners as inherited descriptors (exec.Cmd.ExtraFiles), which turns
//     them into listeners with net.FileListener and writes one byte to a
//     pipe; the predecessor then closes its listeners and exits. There is
//     no protocol: this is the floor to compare with.
//   - Others, such as tableflip, are added by the caller with a Role.
//
// The package is for benchmarks; it needs Linux.
package handoffbench

// Package fdtable sizes the process's descriptor table ahead of many
// descriptors arriving at once.
//
// The kernel grows a process's descriptor table by doubling it when a new
// descriptor does not fit: from 64 slots to 128, 256 and on. In a process
// whose table is shared by several threads, as every Go program's is, each
// growth waits for an RCU grace period first (expand_fdtable in
// fs/file.c), a wait of a few milliseconds on a default kernel. Receiving
// 1,000 descriptors into a fresh process so waits five times. Reserve
// grows the table once, to its final size.
package fdtable

// Package migrate moves established connections from a running process to
// its successor at a takeover (live migration), with the session state and
// the bytes read but not processed of each: the second phase of graceful's
// handoff, between READY and DONE (see graceful/HANDOFF.md).
//
// An application meets it through graceful: Process.Track wraps a
// connection in a Conn, whose reader hands it over at a message boundary
// (see Conn), and Process.MigratedConns returns, in the successor, the
// connections that arrived. Set Options.Migrate on both sides. For
// net/http, graceful's Process.HTTP is the reader (a Gate).
//
// Tracker, Send, Receive and Outgoing are the two sides of the exchange,
// which graceful drives: the predecessor quiesces its connections, sends
// them in CONNS batches while more arrive, and keeps its own copies until
// the successor's acknowledgement of DONE; if anything fails, every
// connection goes back to its reader and the predecessor serves on.
//
// Migration moves the socket, not the kernel's TCP state around it: what
// the application has written stays queued in the socket and is sent
// whichever process holds it. A connection whose reader does not reach
// Handoff within the quiesce timeout stays with the predecessor.
//
// In a successor on Linux, the net.Conn inside a migrated Conn is built on
// an *os.File (reads, writes and deadlines through the runtime poller,
// SyscallConn for socket options), not a *net.TCPConn: that costs a fifth
// of what net.FileConn does, which matters with thousands of connections.
package migrate

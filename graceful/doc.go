// Package graceful restarts a server without refusing a connection: the
// running process (the predecessor) hands its listening sockets, packet
// sockets and open files to the process that replaces it (the successor)
// over a unix socket, and stops serving only once the successor says it is
// ready.
//
// The package has two APIs. The handler API (Serve, Receive, Client, ...)
// keeps the interface of the package fdpass grew from. The restart API,
// described here, is built around a Process:
//
//	p, err := graceful.New(graceful.Options{Path: "/run/myapp/handoff.sock"})
//	ln, err := p.Listen("tcp", ":8080") // inherited, or created
//	go http.Serve(ln, handler)
//	err = p.Ready() // the predecessor, if any, stops here
//	<-p.Exit()      // a successor has taken over: drain and exit
//
// Every generation calls New with the same path. New dials the handoff
// socket: when a predecessor answers, it receives its descriptors; when
// nobody does, it creates the socket. Listen, ListenPacket and OpenFile
// return an inherited descriptor when one matches and create one otherwise.
// Ready closes the inherited descriptors nobody asked for and tells the
// predecessor to stop.
//
// # Handoff protocol
//
// The handoff socket is a SOCK_SEQPACKET unix socket; every message is a
// unixmsg batch whose payload is a control message (HANDOFF.md gives the
// byte layout):
//
//	successor                      predecessor
//	HELLO (versions)        --->   checks SO_PEERCRED and Options.Authorize
//	                        <---   OFFER + every registered descriptor
//	(adopts with Listen ...)       (keeps serving everything)
//	READY                   --->
//	                        <---   DONE; its Exit channel closes
//
// The OFFER batch names its items by index ("0", "1", ...) and describes
// each in meta: "role" (handoff, listener, packet or file), "network" (as
// given to Listen or ListenPacket; for files the access flags), "addr" (as
// given, or the file name) and, for sockets, "netns" (device:inode of the
// network namespace the socket lives in). The kind of every descriptor is
// verified on receipt. Exactly one item has the role handoff: the handoff
// listener, a SOCK_SEQPACKET unix listener.
//
// Either side may send ERROR instead of its next message. Until the
// predecessor has sent DONE it changes nothing: a successor that crashes,
// hangs past Options.Timeout or disconnects leaves it serving, and the next
// successor can try again. The handoff listener travels in the OFFER like
// any other descriptor, so its path never goes missing between
// generations; the predecessor serves one successor at a time, and a
// successor that dials while another is being served waits its turn.
//
// # Live migration of connections
//
// With Options.Migrate set on both sides, established connections move
// too, between READY and DONE. The predecessor tracks each connection it
// serves (Process.Track returns a *Conn to read and write instead); at a
// takeover the readers are interrupted (Read returns ErrMigrating), and each
// hands over its session state and the bytes it has read but not processed
// (Conn.Handoff, or Conn.HandoffReader for a bufio.Reader) at a message
// boundary. The connections travel in CONNS batches; the successor says
// ADOPTED, and the predecessor keeps its copies until its DONE is
// acknowledged. If the successor fails before, the predecessor resumes
// every connection and keeps serving. The successor takes them from
// Process.MigratedConns after Ready, each with its State; their first Reads
// return the bytes handed over. See Conn for how a server quiesces a
// connection, and HANDOFF.md for the messages.
//
// For net/http, Process.HTTP wraps a Server so that at a takeover its idle
// keep-alive connections migrate, busy ones migrate once their response is
// written, and any that cannot end cleanly with "Connection: close".
//
// Migration moves the socket, not the kernel's TCP state around it: what
// the application has written stays queued in the socket and is sent
// whichever process holds it. A connection the predecessor cannot quiesce
// in time (Options.QuiesceTimeout) stays with it.
//
// # systemd
//
// Under systemd a Process needs no glue code. New adopts the descriptors
// systemd passes (LISTEN_FDS: socket activation, and the descriptor store
// given back at start), and Listen and ListenPacket match them by kind and
// address when no predecessor handed over a match; Ready closes what
// nothing used and sends READY=1; a handoff sends RELOADING=1 and, before
// DONE, MAINPID=<successor>, so that systemd follows the new process; a
// rollback sends READY=1 again; Close without a successor sends
// STOPPING=1. Process.Store parks the Process's sockets and files in the
// descriptor store, so that a stop and a later start refuse no connection.
// Without LISTEN_FDS and NOTIFY_SOCKET all of this does nothing. See
// package graceful/systemd for the unit settings.
//
// # Security
//
// Both sides check the peer's credentials with SO_PEERCRED: by default the
// peer must run with this process's uid; Options.Authorize replaces the
// check. The socket file is created with Options.Mode (0600 by default)
// before it appears at its path, so there is no window in which it is more
// open. A socket file left by a dead process is replaced; a live one is
// never taken over without a handoff (New returns ErrAlreadyRunning).
// Abstract names ("@name") have no file mode: rely on the credential check.
//
// # Platforms
//
// The restart API needs Linux; elsewhere New returns ErrUnsupported. The
// package never logs on its own: give Options.Logger to hear about
// handoffs.
package graceful

// Package graceful restarts a server without refusing a connection: the
// running process (the predecessor) hands its listening sockets, packet
// sockets, open files and, if asked, its established connections to the
// process that replaces it (the successor) over a unix socket, and stops
// serving only once the successor says it is ready.
//
//	p, err := graceful.New(graceful.Options{Path: "/run/myapp/handoff.sock"})
//	ln, err := p.Listen("tcp", ":8080") // inherited, or created
//	go srv.Serve(ln)
//	err = p.Ready() // the predecessor, if any, stops here
//	<-p.Exit()      // a successor has taken over: drain and exit
//
// Every generation calls New with the same path. New dials the handoff
// socket: when a predecessor answers, it receives its descriptors; when
// nobody does, it creates the socket. Listen, ListenPacket, OpenFile and
// File adopt an inherited descriptor that matches (kind, network, address,
// network namespace) and create one otherwise. Ready closes what nobody
// adopted and tells the predecessor to stop. A successor that crashes,
// hangs past Options.Timeout or disconnects before that changes nothing:
// the predecessor keeps serving. HANDOFF.md specifies the exchange.
//
// With Options.Migrate set on both sides, established connections move
// too (package graceful/migrate); Process.HTTP does it for a net/http
// server. Under systemd, New adopts what systemd passes and the Process
// tells systemd which process is the service (see Process.Store and
// package graceful/systemd). Peers are checked with SO_PEERCRED (same uid
// by default, Options.Authorize for more); the socket file is created with
// Options.Mode.
//
// # Security
//
// Peers of the handoff socket are checked with SO_PEERCRED for their role
// (same uid by default; Options.Authorize): successors, and requesters of
// an upgrade (RequestUpgrade). What a peer can cost before that is
// bounded: its first message must come within 2 seconds and is read with
// no room for descriptors (the kernel closes any it pushes) and at most 2
// KiB; at most 4 successors wait for their turn; each turn, the migration
// included, ends within Options.Timeout. A successor checks what it is
// offered against the descriptors themselves (kind, bound address,
// network namespace) and bounds a migration (Options.MaxMigrated,
// MaxMigratedBytes). The socket file is created with Options.Mode, never
// wider; SocketPath picks a directory only this user can reach. The
// handler API decodes Meta.Custom with encoding/gob only from its peer,
// which a Server or Receive already accepted.
//
// The package also keeps the handler API of the library it grew from
// (Serve, Handler, Receive, FdListener, Meta, ...): a server that hands
// descriptors to every client that connects.
//
// The restart API needs Linux; elsewhere New returns ErrUnsupported. The
// package never logs on its own: give Options.Logger to hear about
// handoffs.
package graceful

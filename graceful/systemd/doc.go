// Package systemd fits fdpass services to systemd: it adopts the
// descriptors systemd passes (socket activation and the descriptor store),
// tells systemd when the service is ready, reloading, stopping and which
// process is its main one, and parks descriptors in systemd's descriptor
// store so that a crash or a restart refuses no connection, nor, from
// systemd 254 on with FileDescriptorStorePreserve=yes, a stop followed by
// a start (before 254 the store is emptied on stop).
//
// It speaks the documented protocols of sd_listen_fds(3) and sd_notify(3)
// with the standard library and golang.org/x/sys only; it does not link
// libsystemd. Package graceful uses it to adopt systemd's descriptors in
// its inherit-or-create calls; programs that do not use graceful can use it
// on its own.
//
// # Socket activation
//
// [Activation] reads LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES once,
// unsets them, makes the passed descriptors close-on-exec and detects what
// each one is. The [Set] it returns owns them until the program takes
// them by name ([Set.TakeListener], [Set.TakePacketConn], [Set.TakeFile],
// [Set.Take]) or by kind and address ([Set.Match]); [Set.Close] closes the
// rest. Taking a descriptor twice is [ErrTaken], never a second descriptor.
//
//	set, err := systemd.Activation()
//	if err != nil { ... }
//	defer set.Close() // what nobody took
//	web, err := set.TakeListener("web")
//
// # Notifications and the descriptor store
//
// [NewNotifier] returns a [Notifier] for NOTIFY_SOCKET, or nil when the
// variable is unset; every method of a nil Notifier does nothing, so a
// program notifies unconditionally. [Notifier.Store] puts named
// descriptors into the store (FDSTORE=1, FDNAME=, at most 253 per message)
// and [Notifier.Remove] takes them out (FDSTOREREMOVE=1); on the next start
// systemd passes them back with the socket unit's, named, and Activation
// finds them.
//
// The store outlives the process that filled it: systemd passes
// duplicates to each start and keeps its own until they are removed, the
// unit is unloaded or (without FileDescriptorStorePreserve=yes) the
// service stops. Storing the same open socket again is harmless, as
// systemd ignores a descriptor it already holds; a name the new
// configuration no longer uses should be removed, or its socket stays
// open in the store. systemd also drops a stored descriptor by itself
// when polling it reports an error or hang-up (a connection whose peer
// closed), unless it was sent with FDPOLL=0 (use Notify for that).
//
// # Ownership
//
// A Set owns what systemd passed until a Take method or Match hands a
// descriptor over; from then on it is the caller's, and the Set never
// touches it again. Notifier methods never take ownership: systemd
// receives duplicates, and closing the caller's descriptors does not
// affect them.
//
// # Unit settings
//
// A service that uses the descriptor store and hands over between
// generations needs these settings in its [Service] section (see
// examples/systemd/fdpass-example.service):
//
//	Type=notify
//	NotifyAccess=main
//	FileDescriptorStoreMax=64
//	FileDescriptorStorePreserve=yes
//
// Type=notify makes systemd wait for READY=1 before it counts the service
// as started and orders what depends on it, and it sets NOTIFY_SOCKET with
// NotifyAccess=main as the default (other types notify only with an explicit
// NotifyAccess=). Type=notify-reload (systemd 253 and
// later) works too: systemd then sends SIGHUP itself on "systemctl reload"
// and waits for RELOADING=1 and READY=1.
//
// FileDescriptorStoreMax= is the number of descriptors systemd keeps for
// the service; it is 0 by default, which turns the store off and makes
// systemd close (with a warning in the journal) whatever is stored. Count
// every descriptor stored, not every name.
//
// FileDescriptorStorePreserve=yes (systemd 254 and later) keeps the store
// while the unit is stopped, as long as the unit stays loaded, so that
// "systemctl stop" followed by "systemctl start" finds the sockets again
// and connections made in between wait in the kernel's backlog instead of
// being refused. Without it (older systemd ignores the setting with a
// warning) the store survives restarts ("systemctl restart", Restart=)
// but is emptied on stop.
//
// NotifyAccess= says whose notifications systemd reads. In a handoff the
// successor becomes the main process, and there are two ways to tell
// systemd:
//
//   - NotifyAccess=main (recommended): the predecessor, still the main
//     process, sends MAINPID=<successor> ([Notifier.MainPID]) when the
//     successor says it is ready, and before it exits; from then on systemd
//     reads only the successor, which sends READY=1. Messages from the old
//     generation while it drains (a late STOPPING=1, a Store) are ignored,
//     which is what a handoff wants: a draining predecessor must not make
//     systemd think the service is stopping.
//   - NotifyAccess=all: any process of the service may notify, so the
//     successor can announce itself (MAINPID=<own pid> with READY=1) even
//     if the predecessor died. The price is that every process in the
//     control group is heard, the draining predecessor included: it must
//     then not send STOPPING=1 or touch the store.
//
// Either way systemd accepts MAINPID= only for a process in the service's
// control group (a successor started by the predecessor, or by
// ExecReload=, is; one started by hand from a shell is not) unless the
// sender is root, and the predecessor must send it before it exits:
// a main process that exits without a successor named makes systemd stop
// the service and kill the successor with it. The kernel, not the
// sender, attaches the sender's PID to every notification; this package
// sends none of its own.
//
// # Platforms
//
// systemd is Linux-only. Elsewhere [Activation] returns an empty Set when
// nothing was passed and [ErrUnsupported] otherwise, and [NewNotifier]
// returns nil when NOTIFY_SOCKET is unset and ErrUnsupported otherwise.
package systemd

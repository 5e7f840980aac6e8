package load

import (
	"fmt"
	"maps"
	"time"
)

// Request is one request, as its client saw it.
type Request struct {
	Client   int           // index of the client: keep-alive ones first
	Start    time.Time     // when it began (its dial, if it opened a connection)
	Duration time.Duration // until the end of the body, or the error; for one in flight, so far
	Instance string        // the instance that answered
	Err      error         // why it failed; nil if it did not
	InFlight bool          // not finished yet
	// Moved says that another instance answered it than the one that
	// answered its client's previous request: it crossed a takeover.
	Moved bool
}

func (r Request) String() string {
	if r.Duration == 0 {
		return "none"
	}
	s := fmt.Sprintf("%s (client %d", r.Duration.Round(100*time.Microsecond), r.Client)
	switch {
	case r.InFlight:
		s += ", still in flight"
	case r.Err != nil:
		s += fmt.Sprintf(", failed: %v", r.Err)
	case r.Moved:
		s += ", instance " + r.Instance + ", the client's first answer from it"
	default:
		s += ", instance " + r.Instance
	}
	return s + ")"
}

// ClientStats are one client's counts.
type ClientStats struct {
	KeepAlive bool
	OK        int64 // requests answered with 200 and a body that passed the check
	Failed    int64 // requests that failed in any way
	Dials     int64 // connections opened
	// Migrated counts responses that came from another instance than the
	// previous response on the same connection (keep-alive clients only).
	Migrated int64
	// Redialled counts connections the server ended with
	// "Connection: close" after a response; the client's next request
	// opens a new one (keep-alive clients only).
	Redialled int64
	// Instance is the instance of the last response answered.
	Instance string
	// Slowest is the client's slowest finished request.
	Slowest Request
	// InFlightSince is when the request in flight began; zero if none.
	InFlightSince time.Time
}

// Stats are the counts of a Load, from its start or (from Window) over a
// window.
type Stats struct {
	OK, Failed, Dials, Migrated, Redialled int64 // sums of the clients' counts
	// Slowest is the slowest finished request; in a window's Stats, the
	// one that waited longest while the window was open (see Window).
	Slowest Request
	// Instances counts the requests each instance answered.
	Instances map[string]int64
	// Clients holds each client's counts, keep-alive clients first.
	Clients []ClientStats
	// Errors holds the first error messages, ErrorCount counts them all.
	Errors     []string
	ErrorCount int64
	// Elapsed is the time the counts cover.
	Elapsed time.Duration
}

// Sub returns the counts of s since base, an earlier Stats of the same
// Load. Slowest stays s's, and Errors are those of s that base had not
// (as far as both kept them).
func (s Stats) Sub(base Stats) Stats {
	d := s
	d.OK -= base.OK
	d.Failed -= base.Failed
	d.Dials -= base.Dials
	d.Migrated -= base.Migrated
	d.Redialled -= base.Redialled
	d.Elapsed -= base.Elapsed
	d.ErrorCount -= base.ErrorCount
	d.Errors = nil
	if len(base.Errors) < len(s.Errors) {
		d.Errors = s.Errors[len(base.Errors):]
	}
	d.Instances = maps.Clone(s.Instances)
	for k, v := range base.Instances {
		if d.Instances[k] -= v; d.Instances[k] == 0 {
			delete(d.Instances, k)
		}
	}
	d.Clients = append([]ClientStats(nil), s.Clients...)
	for i := range min(len(d.Clients), len(base.Clients)) {
		c, b := &d.Clients[i], base.Clients[i]
		c.OK -= b.OK
		c.Failed -= b.Failed
		c.Dials -= b.Dials
		c.Migrated -= b.Migrated
		c.Redialled -= b.Redialled
	}
	return d
}

// String summarises the counts in one line.
func (s Stats) String() string {
	return fmt.Sprintf("%d requests ok, %d failed, %d dials, %d migrated, %d redialled, %d instances in %s; slowest %v",
		s.OK, s.Failed, s.Dials, s.Migrated, s.Redialled, len(s.Instances), s.Elapsed.Round(time.Millisecond), s.Slowest)
}

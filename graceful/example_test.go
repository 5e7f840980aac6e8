package graceful_test

import (
	"context"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fdpass/fdpass/graceful"
)

// A web server that restarts without refusing a connection or failing a
// request: SIGHUP starts the same binary again (Upgrade), which takes the
// listener and the keep-alive connections over; this process then drains
// what stayed and exits. The path is one only this user can reach.
func Example_restart() {
	path, err := graceful.SocketPath("myapp")
	if err != nil {
		log.Fatal(err)
	}
	p, err := graceful.New(graceful.Options{
		Path:    path,
		Migrate: true,
		Logger:  slog.Default(),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	// Inherited from the predecessor if it had one, created otherwise.
	ln, err := p.Listen("tcp", ":8080")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("hello\n"))
	})}
	hs := p.HTTP(srv) // keep-alive connections migrate at a takeover
	go hs.Serve(ln)

	// The predecessor stops accepting now; until here it served.
	if err := p.Ready(); err != nil {
		log.Fatal(err)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	for stop := false; !stop; {
		select {
		case <-p.Exit(): // a successor took over
			stop = true
		case s := <-sig:
			if s != syscall.SIGHUP {
				stop = true
				break
			}
			// Start this binary again; it takes over, or the verdict
			// says why not and this process serves on.
			go func() {
				if err := p.Upgrade(context.Background()); err != nil {
					log.Print(err)
				}
			}()
		}
	}
	// Finish what stayed: each connection's next response says
	// "Connection: close".
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hs.Drain(ctx)
}

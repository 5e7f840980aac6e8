package graceful_test

import (
	"context"
	"log"
	"log/slog"
	"net/http"
	"time"

	"github.com/fdpass/fdpass/graceful"
)

// A web server that restarts without refusing a connection: start the new
// binary with the same handoff path, and the old one hands over its
// listener and exits once the new one is ready.
func Example_restart() {
	p, err := graceful.New(graceful.Options{
		Path:   "/run/myapp/handoff.sock",
		Logger: slog.Default(),
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
	go srv.Serve(ln)

	// The predecessor stops accepting now; until here it served.
	if err := p.Ready(); err != nil {
		log.Fatal(err)
	}

	// A successor took over: finish the requests in flight and exit.
	<-p.Exit()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
}

// Command grpcserver is a gRPC server that restarts without failing an RPC
// or breaking a stream: start a new instance with the same flags and it
// takes the listening socket over from the running one, which stops
// gracefully and exits.
//
//	go run . -listen 127.0.0.1:4444 &
//	go run . -listen 127.0.0.1:4444 &   # takes over; the first one exits
//
// The recipe: serve grpc-go on the listener Process.Listen returns,
// wrapped with Process.WaitListener (grpc-go owns the accept loop: the
// wrapper pauses it while a handoff needs the room that accepting would
// take, under a flood of connections), and call GracefulStop once Exit is
// closed. gRPC connections are HTTP/2: they
// do not migrate. GracefulStop sends each client GOAWAY (in two steps, so
// that no RPC the client started meanwhile is refused), lets the RPCs and
// streams in hand finish here, and returns once they have; the clients
// start their next RPCs on a new connection, to the successor, which has
// accepted from the moment it said READY. (graceful.HTTPServer is for
// net/http; grpc-go serves its own HTTP/2, so it is not needed here.)
//
// Its service, fdpass.example.Echo, has no generated code: its messages
// are raw bytes (a codec of its own). Echo answers "gen=N " and the
// request; Chat, a bidirectional stream, answers each message so.
//
// The process reports on standard output:
//
//	ready pid=1234 generation=2 addr=127.0.0.1:4444
//	exiting pid=1234 generation=2   (a successor took over)
//	exit pid=1234 generation=2 took=12ms   (GracefulStop returned)
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"

	"github.com/fdpass/fdpass/graceful"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:4444", "gRPC listen `address`")
	sock := flag.String("graceful", "", "handoff socket `path` (default: graceful.SocketPath)")
	stop := flag.Duration("stop", 30*time.Second, "how long the old instance lets RPCs and streams in hand finish")
	flag.Parse()
	if err := run(*sock, *addr, *stop); err != nil {
		log.Fatal(err)
	}
}

func run(sock, addr string, stop time.Duration) error {
	if sock == "" {
		var err error
		if sock, err = graceful.SocketPath("grpcserver"); err != nil {
			return err
		}
	}
	p, err := graceful.New(graceful.Options{Path: sock})
	if err != nil {
		return err
	}
	defer p.Close()
	ln, err := p.Listen("tcp", addr)
	if err != nil {
		return err
	}
	gen := p.Generation()
	srv := grpc.NewServer(grpc.ForceServerCodec(Codec{}))
	srv.RegisterService(&EchoService, echo{prefix: []byte("gen=" + strconv.FormatUint(gen, 10) + " ")})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(p.WaitListener(ln)) }()
	if err := p.Ready(); err != nil {
		return err
	}
	fmt.Printf("ready pid=%d generation=%d addr=%s\n", os.Getpid(), gen, ln.Addr())
	select {
	case <-p.Exit():
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	}
	fmt.Printf("exiting pid=%d generation=%d\n", os.Getpid(), gen)
	start := time.Now()
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(stop):
		srv.Stop()
		<-stopped
	}
	fmt.Printf("exit pid=%d generation=%d took=%s\n", os.Getpid(), gen, time.Since(start).Round(time.Millisecond))
	return nil
}

// Codec passes messages as they are: a message is a *[]byte.
type Codec struct{}

var _ encoding.Codec = Codec{}

func (Codec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("codec: %T is not a *[]byte", v)
	}
	return *b, nil
}

func (Codec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("codec: %T is not a *[]byte", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (Codec) Name() string { return "bytes" }

// EchoService is fdpass.example.Echo.
var EchoService = grpc.ServiceDesc{
	ServiceName: "fdpass.example.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var in []byte
			if err := dec(&in); err != nil {
				return nil, err
			}
			out := append(append([]byte(nil), srv.(echo).prefix...), in...)
			return &out, nil
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Chat",
		ServerStreams: true,
		ClientStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			prefix := srv.(echo).prefix
			for {
				var in []byte
				if err := stream.RecvMsg(&in); err == io.EOF {
					return nil // the client is done
				} else if err != nil {
					return err
				}
				out := append(append([]byte(nil), prefix...), in...)
				if err := stream.SendMsg(&out); err != nil {
					return err
				}
			}
		},
	}},
}

type echo struct{ prefix []byte }

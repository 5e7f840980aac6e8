module github.com/fdpass/fdpass/examples/grpcserver

go 1.26.0

require (
	github.com/fdpass/fdpass v0.0.0
	google.golang.org/grpc v1.85.0
)

require (
	github.com/vishvananda/netns v0.0.5 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace github.com/fdpass/fdpass => ../..

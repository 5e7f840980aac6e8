module github.com/fdpass/fdpass/examples/tableflipcmp

go 1.26.0

require (
	github.com/cloudflare/tableflip v1.2.3
	github.com/fdpass/fdpass v0.0.0
)

require (
	github.com/vishvananda/netns v0.0.5 // indirect
	golang.org/x/sys v0.50.0 // indirect
)

replace github.com/fdpass/fdpass => ../..

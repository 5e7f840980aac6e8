package fd_test

import (
	"fmt"
	"log"
	"net"
	"os"

	"github.com/fdpass/fdpass/fd"
)

// Dup makes a close-on-exec duplicate that outlives the original.
func ExampleDup() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	n, err := fd.Dup(ln)
	if err != nil {
		log.Fatal(err)
	}
	id, _ := fd.IdentifyConn(ln)
	dupID, _ := fd.Identify(n)
	fmt.Println("same socket:", id == dupID)

	// Closing the original leaves the duplicate listening.
	addr := ln.Addr().String()
	ln.Close()
	f := os.NewFile(uintptr(n), "listener")
	ln2, err := net.FileListener(f) // works on its own duplicate
	f.Close()
	if err != nil {
		log.Fatal(err)
	}
	defer ln2.Close()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	s, err := ln2.Accept()
	if err != nil {
		log.Fatal(err)
	}
	s.Close()
	fmt.Println("accepted on the duplicate")
	// Output:
	// same socket: true
	// accepted on the duplicate
}

// Same compares what two descriptors refer to, not their numbers.
func ExampleSame() {
	a, err := os.Open(os.DevNull)
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	b, err := os.Open(os.DevNull)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	same, err := fd.Same(int(a.Fd()), int(b.Fd()))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(same)
	// Output: true
}

// Count proves that a piece of code gives back every descriptor it opens.
func ExampleCount() {
	before, err := fd.Count()
	if err != nil {
		log.Fatal(err)
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		log.Fatal(err)
	}
	during, _ := fd.Count()
	f.Close()
	after, _ := fd.Count()
	fmt.Println(during-before, after-before)
	// Output: 1 0
}

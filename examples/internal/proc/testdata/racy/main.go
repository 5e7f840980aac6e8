// Command racy has a data race, for the tests of proc: two goroutines
// write one variable without synchronisation.
package main

import "fmt"

func main() {
	n := 0
	done := make(chan bool)
	go func() {
		n++
		done <- true
	}()
	n++
	<-done
	fmt.Println("ready n=", n)
}

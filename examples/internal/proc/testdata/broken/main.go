// Command broken does not compile, for the tests of proc.
package main

func main() {
	undefined()
}

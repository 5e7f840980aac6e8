package proc

// TB is the part of testing.TB that BuildT and StartT use.
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// BuildT builds the example package pkg into dir for a test, as Build
// does, and fails the test if it does not build: an example that does not
// build is a failure, never a reason to skip.
func BuildT(t TB, dir, pkg string) string {
	t.Helper()
	bin, err := Build(dir, pkg)
	if err != nil {
		t.Fatalf("cannot build the example: %v", err)
	}
	return bin
}

// StartT starts bin with args for a test, as Start does, and fails the
// test if it cannot. When the test ends, it kills the process if it still
// runs, and fails the test if the process reported a data race.
func StartT(t TB, bin string, args ...string) *Instance {
	t.Helper()
	in, err := Start(bin, args...)
	if err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		in.Kill()
		if err := in.Races(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return in
}

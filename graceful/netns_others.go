//go:build !linux

package graceful

func currentNetNS() string { return "" }

func socketNetNS(_ any, def string) string { return def }

type ownNetNS struct{ id string }

func currentOwnNetNS() ownNetNS { return ownNetNS{} }

func (ownNetNS) homes(fds []int) []nsAnswer { return make([]nsAnswer, len(fds)) }

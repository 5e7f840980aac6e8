//go:build !linux

package graceful

func currentNetNS() string { return "" }

func socketNetNS(_ any, def string) string { return def }

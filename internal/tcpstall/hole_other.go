//go:build !linux

package tcpstall

func holeListen(string) (int, error) { return -1, errUnsupported }

//go:build !unix

package store

// InUse reports whether a process has the store file at path open. This
// platform has no flock to ask: it reports false, and Open's lock still
// refuses a file in use.
func InUse(path string) (bool, error) { return false, nil }

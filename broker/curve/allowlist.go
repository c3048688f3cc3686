package curve

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// maxAllowFiles bounds the *.pub files an allowlist directory may hold.
const maxAllowFiles = 100000

// Allowlist is the set of client public keys permitted to connect: the
// *.pub files of one directory. Allowed is safe for concurrent use and
// never blocks on Reload, which swaps the whole set at once.
type Allowlist struct {
	dir  string
	mu   sync.Mutex // serialises Reload
	keys atomic.Pointer[allowSet]
}

type allowSet struct {
	byKey map[string]string // public key → file name
}

// Load reads every *.pub file of dir. Other files (a stray .key file
// among them) are ignored; a *.pub file without a valid public key is an
// error, as is a missing directory. An empty directory is valid: it
// allows no one.
func Load(dir string) (*Allowlist, error) {
	a := &Allowlist{dir: dir}
	if err := a.Reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// Dir returns the allowlist's directory.
func (a *Allowlist) Dir() string { return a.dir }

// Reload re-reads the directory and, when every *.pub file in it is
// valid, replaces the set in one atomic swap. On error the previous set
// stays in force. It is safe for concurrent use (the command calls it on
// SIGHUP).
func (a *Allowlist) Reload() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	set, err := readAllowDir(a.dir)
	if err != nil {
		return err
	}
	a.keys.Store(set)
	return nil
}

// Allowed reports whether the Z85 public key pubZ85 is in the list. A nil
// Allowlist allows no one.
func (a *Allowlist) Allowed(pubZ85 string) bool {
	if a == nil {
		return false
	}
	set := a.keys.Load()
	if set == nil {
		return false
	}
	_, ok := set.byKey[pubZ85]
	return ok
}

// Len returns the number of distinct keys allowed.
func (a *Allowlist) Len() int {
	if a == nil {
		return 0
	}
	if set := a.keys.Load(); set != nil {
		return len(set.byKey)
	}
	return 0
}

// Names returns the file names of the allowed keys, sorted (for logs and
// listings; when two files hold the same key, one of them).
func (a *Allowlist) Names() []string {
	if a == nil {
		return nil
	}
	set := a.keys.Load()
	if set == nil {
		return nil
	}
	names := make([]string, 0, len(set.byKey))
	for _, n := range set.byKey {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func readAllowDir(dir string) (*allowSet, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("allowlist: %w", err)
	}
	set := &allowSet{byKey: map[string]string{}}
	var errs []error
	files := 0
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, PublicExt) || strings.HasPrefix(name, ".") {
			continue
		}
		if e.IsDir() {
			continue
		}
		if files++; files > maxAllowFiles {
			return nil, fmt.Errorf("allowlist %s: more than %d %s files", dir, maxAllowFiles, PublicExt)
		}
		pub, err := LoadPublic(filepath.Join(dir, name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, dup := set.byKey[pub]; !dup {
			set.byKey[pub] = name
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("allowlist %s (not loaded): %w", dir, err)
	}
	return set, nil
}

package curve

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// copyFile copies a key file (tests only).
func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestAllowlistLoadReload(t *testing.T) {
	needCurve(t)
	keys, allow := t.TempDir(), t.TempDir()
	alice, err := Keygen(keys, "alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := Keygen(keys, "bob")
	if err != nil {
		t.Fatal(err)
	}
	carol, err := Keygen(allow, "carol") // carol.key sits in the allowlist: ignored
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(allow, "carol.pub")); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(keys, "alice.pub"), filepath.Join(allow, "alice.pub"))
	if err := os.WriteFile(filepath.Join(allow, "README"), []byte("not a key"), 0o644); err != nil {
		t.Fatal(err)
	}

	a, err := Load(allow)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !a.Allowed(alice.Public) || a.Allowed(bob.Public) || a.Allowed(carol.Public) || a.Len() != 1 {
		t.Fatalf("after Load: alice %v bob %v carol %v len %d; want only alice",
			a.Allowed(alice.Public), a.Allowed(bob.Public), a.Allowed(carol.Public), a.Len())
	}
	if a.Allowed(alice.Secret) || a.Allowed("") {
		t.Fatal("a secret key or an empty key is allowed")
	}

	// Adding a file changes nothing until Reload.
	copyFile(t, filepath.Join(keys, "bob.pub"), filepath.Join(allow, "bob.pub"))
	if a.Allowed(bob.Public) {
		t.Fatal("bob allowed before Reload")
	}
	if err := a.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if !a.Allowed(bob.Public) || !a.Allowed(alice.Public) || a.Len() != 2 {
		t.Fatalf("after Reload: bob %v alice %v len %d", a.Allowed(bob.Public), a.Allowed(alice.Public), a.Len())
	}
	if got := strings.Join(a.Names(), ","); got != "alice.pub,bob.pub" {
		t.Errorf("Names = %s", got)
	}

	// A bad file: the reload is refused, the previous set stays.
	bad := filepath.Join(allow, "typo.pub")
	if err := os.WriteFile(bad, []byte("public-key = \"tooshort\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(allow, "alice.pub")); err != nil {
		t.Fatal(err)
	}
	err = a.Reload()
	if err == nil || !strings.Contains(err.Error(), "typo.pub") || !strings.Contains(err.Error(), "not loaded") {
		t.Fatalf("Reload with a bad file: %v; want an error naming typo.pub", err)
	}
	t.Logf("refused reload: %v", err)
	if !a.Allowed(alice.Public) || !a.Allowed(bob.Public) {
		t.Fatal("a refused reload changed the set")
	}

	// Fixed: removal takes effect.
	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if a.Allowed(alice.Public) || !a.Allowed(bob.Public) {
		t.Fatal("after removing alice.pub: alice still allowed, or bob not")
	}

	if _, err := Load(filepath.Join(allow, "missing")); err == nil {
		t.Error("Load of a missing directory succeeded")
	}
	var none *Allowlist
	if none.Allowed(bob.Public) || none.Len() != 0 {
		t.Error("a nil Allowlist allows")
	}
	empty, err := Load(t.TempDir())
	if err != nil || empty.Len() != 0 || empty.Allowed(bob.Public) {
		t.Errorf("empty directory: %v, len %d", err, empty.Len())
	}
}

// Allowed runs concurrently with Reload (under -race) and always sees a
// whole set: the key present in both versions is never missing.
func TestAllowlistConcurrentReload(t *testing.T) {
	needCurve(t)
	keys, allow := t.TempDir(), t.TempDir()
	stay, _ := Keygen(keys, "stay")
	flip, _ := Keygen(keys, "flip")
	copyFile(t, filepath.Join(keys, "stay.pub"), filepath.Join(allow, "stay.pub"))
	a, err := Load(allow)
	if err != nil {
		t.Fatal(err)
	}
	var missing atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if !a.Allowed(stay.Public) {
					missing.Add(1)
				}
				a.Allowed(flip.Public)
			}
		}()
	}
	for i := range 100 {
		p := filepath.Join(allow, "flip.pub")
		if i%2 == 0 {
			copyFile(t, filepath.Join(keys, "flip.pub"), p)
		} else {
			_ = os.Remove(p)
		}
		if err := a.Reload(); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	if n := missing.Load(); n != 0 {
		t.Fatalf("the stable key was missing %d times during reloads", n)
	}
}

package curve

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// An operator who passes a public key file where a secret one is wanted
// (`titanic submit --curve-key ~/.titanic/alice.pub`, or
// security.secret_key_file = broker.pub) is told that it is a public key
// file the first time, not to "run chmod 600 alice.pub" (the .pub file is
// 0644 as keygen wrote it): a public file is never to be locked down.
func TestPublicFileAsSecretSaysSo(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	if _, err := Keygen(dir, "alice"); err != nil {
		t.Fatal(err)
	}
	_, err := LoadKeyPair(filepath.Join(dir, "alice.pub"))
	if err == nil {
		t.Fatal("a public key file loaded as a key pair")
	}
	if errors.Is(err, ErrInsecureFile) || strings.Contains(err.Error(), "chmod") || !strings.Contains(err.Error(), "public key file") {
		t.Errorf("LoadKeyPair(alice.pub) = %v; want it to say this is a public key file, not to chmod it", err)
	}
}

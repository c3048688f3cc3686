package curve

import (
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	zmq "github.com/pebbe/zmq4"
)

func needCurve(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("skipping: %v", err)
	}
}

func TestKeygenLoadRoundTrip(t *testing.T) {
	needCurve(t)
	dir := filepath.Join(t.TempDir(), "keys") // Keygen makes it
	kp, err := Keygen(dir, "broker")
	if err != nil {
		t.Fatalf("Keygen: %v", err)
	}
	if err := kp.Validate(); err != nil {
		t.Fatalf("generated pair invalid: %v", err)
	}
	for name, want := range map[string]os.FileMode{"broker.key": 0o600, "broker.pub": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %04o, want %04o", name, got, want)
		}
	}
	sec, _ := os.ReadFile(filepath.Join(dir, "broker.key"))
	pub, _ := os.ReadFile(filepath.Join(dir, "broker.pub"))
	t.Logf("broker.key:\n%s", strings.ReplaceAll(string(sec), kp.Secret, "<secret>"))
	if !strings.Contains(string(sec), kp.Secret) || !strings.Contains(string(sec), kp.Public) || !strings.Contains(string(sec), "#") {
		t.Errorf("secret file lacks a key or its comments:\n%s", sec)
	}
	if strings.Contains(string(pub), kp.Secret) || strings.Contains(string(pub), "secret-key") {
		t.Fatalf("public file holds the secret key:\n%s", pub)
	}

	got, err := LoadKeyPair(filepath.Join(dir, "broker.key"))
	if err != nil {
		t.Fatalf("LoadKeyPair: %v", err)
	}
	if got != kp {
		t.Errorf("LoadKeyPair = %+v, want %+v", got, kp)
	}
	for _, f := range []string{"broker.pub", "broker.key"} {
		p, err := LoadPublic(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("LoadPublic(%s): %v", f, err)
		}
		if p != kp.Public {
			t.Errorf("LoadPublic(%s) = %s, want %s", f, p, kp.Public)
		}
	}

	// Never overwrite.
	if _, err := Keygen(dir, "broker"); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Keygen over existing files: %v, want ErrExist", err)
	}
	if again, _ := LoadKeyPair(filepath.Join(dir, "broker.key")); again != kp {
		t.Errorf("key file changed by a refused Keygen")
	}
	for _, bad := range []string{"", "a/b", "../x", ".hidden"} {
		if _, err := Keygen(dir, bad); err == nil {
			t.Errorf("Keygen(name %q) succeeded", bad)
		}
	}
}

func TestLoadKeyPairRefusesReadableSecret(t *testing.T) {
	needCurve(t)
	dir := t.TempDir()
	if _, err := Keygen(dir, "c"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "c.key")
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKeyPair(path)
		if !errors.Is(err, ErrInsecureFile) {
			t.Errorf("mode %04o: err %v, want ErrInsecureFile", mode, err)
			continue
		}
		if !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: error does not say how to fix it: %v", mode, err)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyPair(path); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
}

func TestBadKeyFiles(t *testing.T) {
	needCurve(t)
	a, _ := NewKeyPair()
	b, _ := NewKeyPair()
	pair := func(pub, sec string) string {
		return "# test\ncurve\n    public-key = \"" + pub + "\"\n    secret-key = \"" + sec + "\"\n"
	}
	cases := []struct {
		name, content, want string
		public              bool // LoadPublic also fails
	}{
		{"short key", pair(a.Public[:39], a.Secret), "39 characters, want 40", true},
		{"long key", pair(a.Public+"0", a.Secret), "41 characters, want 40", true},
		{"not Z85", pair(a.Public[:10]+"~"+a.Public[11:], a.Secret), `character '~' at offset 10 is not Z85`, true},
		{"quote inside", pair(a.Public[:10]+`"`+a.Public[11:], a.Secret), "not Z85", true},
		{"overflow", pair("#####"+a.Public[5:], a.Secret), "overflow 32 bits", true},
		{"bad secret", pair(a.Public, a.Secret[:20]), "secret-key: bad CURVE key: 20 characters", true},
		{"mismatched pair", pair(a.Public, b.Secret), "does not belong to public key", false},
		{"public file", "curve\n    public-key = \"" + a.Public + "\"\n", "no secret-key", false},
		{"no public", "curve\n    secret-key = \"" + a.Secret + "\"\n", "no public-key", true},
		{"empty", "", "no secret-key", true},
		{"twice", pair(a.Public, a.Secret) + "    public-key = \"" + a.Public + "\"\n", "given twice", true},
		{"huge", strings.Repeat("#\n", maxKeyFile), "not a key file", true},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".key")
			if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadKeyPair(path)
			if err == nil || !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("LoadKeyPair: %v; want ErrBadKey saying %q", err, c.want)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error does not name the file: %v", err)
			}
			_, perr := LoadPublic(path)
			if c.public && perr == nil {
				t.Errorf("LoadPublic accepted it")
			}
			if !c.public && perr != nil {
				t.Errorf("LoadPublic: %v (its public key is fine)", perr)
			}
		})
	}
	if _, err := LoadKeyPair(filepath.Join(dir, "missing.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := LoadKeyPair(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
}

// The Go Z85 code and the key derivation agree with libzmq's.
func TestZ85AndPublicOfMatchLibzmq(t *testing.T) {
	needCurve(t)
	for range 50 {
		raw := make([]byte, 32)
		_, _ = rand.Read(raw)
		enc := encodeZ85(raw)
		if want := zmq.Z85encode(string(raw)); enc != want {
			t.Fatalf("encodeZ85 = %s, libzmq %s", enc, want)
		}
		dec, err := decodeKey(enc)
		if err != nil || string(dec) != string(raw) {
			t.Fatalf("decodeKey(%s) = %x, %v; want %x", enc, dec, err, raw)
		}
		kp, err := NewKeyPair()
		if err != nil {
			t.Fatal(err)
		}
		if pub, err := PublicOf(kp.Secret); err != nil || pub != kp.Public {
			t.Fatalf("PublicOf = %s, %v; libzmq made %s", pub, err, kp.Public)
		}
	}
}

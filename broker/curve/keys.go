package curve

import (
	"bufio"
	"bytes"
	"crypto/ecdh"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// KeyLen is the length of a key in Z85 (32 bytes).
const KeyLen = 40

// File extensions written by Keygen and read by Allowlist.
const (
	SecretExt = ".key"
	PublicExt = ".pub"
)

// maxKeyFile bounds what is read of a key file: a key file is a few
// hundred bytes, anything much larger is not one.
const maxKeyFile = 64 << 10

// ErrBadKey is wrapped by every error about a malformed key or key file.
var ErrBadKey = errors.New("bad CURVE key")

// ErrInsecureFile is wrapped by LoadKeyPair's error for a secret key file
// that group or others may access.
var ErrInsecureFile = errors.New("secret key file is accessible by group or others")

// z85Chars is the Z85 alphabet (ZeroMQ RFC 32).
const z85Chars = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"

var z85Value = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(z85Chars); i++ {
		t[z85Chars[i]] = int8(i)
	}
	return t
}()

// Available reports an error when the libzmq in use was built without
// CURVE support.
func Available() error {
	if !zmq.HasCurve() {
		return errors.New("libzmq was built without CURVE support (libsodium)")
	}
	return nil
}

// KeyPair is a CURVE key pair in Z85.
type KeyPair struct {
	Public string
	Secret string
}

// NewKeyPair returns a fresh key pair from libzmq.
func NewKeyPair() (KeyPair, error) {
	if err := Available(); err != nil {
		return KeyPair{}, err
	}
	pub, sec, err := zmq.NewCurveKeypair()
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate CURVE key pair: %w", err)
	}
	return KeyPair{Public: pub, Secret: sec}, nil
}

// Validate checks that both keys are well formed and that the secret key
// belongs to the public key.
func (kp KeyPair) Validate() error {
	if err := CheckKey(kp.Public); err != nil {
		return fmt.Errorf("public key: %w", err)
	}
	pub, err := PublicOf(kp.Secret)
	if err != nil {
		return err
	}
	if pub != kp.Public {
		return fmt.Errorf("%w: the secret key does not belong to public key %s", ErrBadKey, kp.Public)
	}
	return nil
}

// PublicOf derives the public key (Z85) of a secret key (Z85): CURVE keys
// are Curve25519 keys, public = X25519(secret, basepoint).
func PublicOf(secret string) (string, error) {
	raw, err := decodeKey(secret)
	if err != nil {
		return "", fmt.Errorf("secret key: %w", err)
	}
	defer clear(raw)
	priv, err := ecdh.X25519().NewPrivateKey(raw)
	if err != nil {
		return "", fmt.Errorf("%w: secret key: %w", ErrBadKey, err)
	}
	return encodeZ85(priv.PublicKey().Bytes()), nil
}

// CheckKey reports whether s is a well-formed Z85 key: 40 characters of
// the Z85 alphabet encoding 32 bytes.
func CheckKey(s string) error {
	_, err := decodeKey(s)
	return err
}

// decodeKey decodes a Z85 key to its 32 bytes.
func decodeKey(s string) ([]byte, error) {
	if len(s) != KeyLen {
		return nil, fmt.Errorf("%w: %d characters, want %d (Z85)", ErrBadKey, len(s), KeyLen)
	}
	out := make([]byte, 0, 32)
	for i := 0; i < len(s); i += 5 {
		var v uint64
		for j := i; j < i+5; j++ {
			d := z85Value[s[j]]
			if d < 0 {
				return nil, fmt.Errorf("%w: character %q at offset %d is not Z85", ErrBadKey, s[j], j)
			}
			v = v*85 + uint64(d)
		}
		if v > 0xffffffff {
			return nil, fmt.Errorf("%w: characters %d to %d overflow 32 bits: not Z85", ErrBadKey, i, i+4)
		}
		out = append(out, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return out, nil
}

// encodeZ85 encodes b (a multiple of 4 bytes) in Z85.
func encodeZ85(b []byte) string {
	var sb strings.Builder
	sb.Grow(len(b) / 4 * 5)
	for i := 0; i+4 <= len(b); i += 4 {
		v := uint32(b[i])<<24 | uint32(b[i+1])<<16 | uint32(b[i+2])<<8 | uint32(b[i+3])
		var chunk [5]byte
		for j := 4; j >= 0; j-- {
			chunk[j] = z85Chars[v%85]
			v /= 85
		}
		sb.Write(chunk[:])
	}
	return sb.String()
}

// Keygen makes a key pair and writes it to dir (created, mode 0700, when
// missing) as name.key (mode 0600: both keys) and name.pub (mode 0644:
// the public key). It never overwrites: an existing file is an error
// wrapping fs.ErrExist.
func Keygen(dir, name string) (KeyPair, error) {
	if err := checkName(name); err != nil {
		return KeyPair{}, err
	}
	kp, err := NewKeyPair()
	if err != nil {
		return KeyPair{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return KeyPair{}, fmt.Errorf("key directory: %w", err)
	}
	secPath := filepath.Join(dir, name+SecretExt)
	pubPath := filepath.Join(dir, name+PublicExt)
	for _, p := range []string{secPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return KeyPair{}, fmt.Errorf("%s: %w: will not overwrite a key file", p, os.ErrExist)
		}
	}
	now := time.Now().UTC().Format(time.RFC3339)
	sec := fmt.Sprintf(`#   ****  Generated on %s by titanic keygen  ****
#   ZeroMQ CURVE **Secret** Certificate
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.
#   Hand out %s instead.

metadata
    name = %q
curve
    public-key = "%s"
    secret-key = "%s"
`, now, name+PublicExt, name, kp.Public, kp.Secret)
	pub := fmt.Sprintf(`#   ****  Generated on %s by titanic keygen  ****
#   ZeroMQ CURVE Public Certificate
#   Exchange securely, or use a secure mechanism to verify the contents
#   of this file after exchange. Store public certificates in your home
#   directory, or a shared directory (an allowlist directory).

metadata
    name = %q
curve
    public-key = "%s"
`, now, name, kp.Public)
	if err := writeNew(secPath, []byte(sec), 0o600); err != nil {
		return KeyPair{}, err
	}
	if err := writeNew(pubPath, []byte(pub), 0o644); err != nil {
		_ = os.Remove(secPath)
		return KeyPair{}, err
	}
	return kp, nil
}

// checkName accepts a file name stem for Keygen.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("keygen: empty key name")
	case strings.ContainsAny(name, `/\`) || name != filepath.Base(name):
		return fmt.Errorf("keygen: key name %q: must be a plain file name, not a path", name)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("keygen: key name %q: must not start with a dot", name)
	}
	return nil
}

// writeNew creates path (failing when it exists) with perm, writes data
// and syncs it.
func writeNew(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close %s: %w", path, cerr)
		}
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	// The umask may only remove bits; set them exactly all the same.
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}

// LoadKeyPair reads a secret key file written by Keygen (or a CZMQ secret
// certificate). It refuses a file that group or others may access
// (ErrInsecureFile), a missing or malformed key (ErrBadKey), and a secret
// key that does not belong to the file's public key.
func LoadKeyPair(path string) (KeyPair, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return KeyPair{}, fmt.Errorf("secret key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return KeyPair{}, fmt.Errorf("secret key file %s: not a regular file", path)
	}
	// Read before the permission check: a public key file given where
	// the secret one is wanted is said to be one, not to be locked down.
	keys, err := readKeyFile(path)
	if err != nil {
		return KeyPair{}, err
	}
	kp := KeyPair{Public: keys["public-key"], Secret: keys["secret-key"]}
	if kp.Secret == "" {
		want := "the secret key file (NAME" + SecretExt + ", made by titanic keygen beside NAME" + PublicExt + ")"
		if base, ok := strings.CutSuffix(path, PublicExt); ok {
			want = base + SecretExt
		}
		if kp.Public != "" {
			return KeyPair{}, fmt.Errorf("%s: %w: a public key file (no secret-key): give %s", path, ErrBadKey, want)
		}
		return KeyPair{}, fmt.Errorf("%s: %w: no secret-key: give %s", path, ErrBadKey, want)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return KeyPair{}, fmt.Errorf("%s: %w (permissions %04o): run chmod 600 %s", path, ErrInsecureFile, perm, path)
	}
	if kp.Public == "" {
		return KeyPair{}, fmt.Errorf("%s: %w: no public-key", path, ErrBadKey)
	}
	if err := kp.Validate(); err != nil {
		return KeyPair{}, fmt.Errorf("%s: %w", path, err)
	}
	return kp, nil
}

// LoadPublic reads the public key of a key file (a .pub file, or the
// public-key of a .key file).
func LoadPublic(path string) (string, error) {
	keys, err := readKeyFile(path)
	if err != nil {
		return "", err
	}
	pub := keys["public-key"]
	if pub == "" {
		return "", fmt.Errorf("%s: %w: no public-key", path, ErrBadKey)
	}
	return pub, nil
}

// readKeyFile parses the ZPL subset of CZMQ certificates: comment lines
// start with '#'; "name = value" lines (value optionally quoted) anywhere
// in the file. It returns the public-key and secret-key values it found,
// each checked to be a Z85 key.
func readKeyFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes, not a key file", path, ErrBadKey, maxKeyFile)
	}
	keys := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, value, ok := strings.Cut(text, "=")
		if !ok {
			continue // a ZPL section name ("curve", "metadata")
		}
		name = strings.TrimSpace(name)
		if name != "public-key" && name != "secret-key" {
			continue
		}
		value = unquote(strings.TrimSpace(value))
		if _, dup := keys[name]; dup {
			return nil, fmt.Errorf("%s:%d: %w: %s given twice", path, line, ErrBadKey, name)
		}
		if err := CheckKey(value); err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %w", path, line, name, err)
		}
		keys[name] = value
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, ErrBadKey, err)
	}
	return keys, nil
}

func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] {
		return s[1 : len(s)-1]
	}
	return s
}

package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Size is a number of bytes, or -1 (Unlimited) where a limit may be
// lifted. It reads as -1, an integer, or an integer with a
// unit: B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of
// 1024), case-insensitive, with an optional space: 1048576, "64MiB",
// "10 MB"; not with a fraction ("1.5MiB" is refused as one). It prints with the largest binary unit that divides it exactly.
type Size int64

// Binary size units.
const (
	KiB Size = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
)

var sizeUnits = map[string]Size{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"kib": KiB, "mib": MiB, "gib": GiB, "tib": TiB,
}

// ParseSize reads a size such as "64MiB" or "1048576".
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	if t == "-1" {
		return Unlimited, nil
	}
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("size %q: want bytes, or a number with a unit such as 64MiB", s)
	}
	if i < len(t) && (t[i] == '.' || t[i] == ',') && i+1 < len(t) && t[i+1] >= '0' && t[i+1] <= '9' {
		return 0, fmt.Errorf("size %q: a size is a whole number of bytes or of a unit, without a fraction: 1536KiB, not 1.5MiB", s)
	}
	unit, ok := sizeUnits[strings.ToLower(strings.TrimSpace(t[i:]))]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (want B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)", s, strings.TrimSpace(t[i:]))
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n > math.MaxInt64/int64(unit) {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return Size(n) * unit, nil
}

// String prints s with the largest binary unit dividing it: "64MiB",
// "1000".
func (s Size) String() string {
	for _, u := range []struct {
		n    Size
		name string
	}{{TiB, "TiB"}, {GiB, "GiB"}, {MiB, "MiB"}, {KiB, "KiB"}} {
		if s != 0 && s%u.n == 0 {
			return strconv.FormatInt(int64(s/u.n), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// UnmarshalText reads a size (TOML integers come here as their decimal
// text).
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText prints the size as String does.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

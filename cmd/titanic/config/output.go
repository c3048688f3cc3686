package config

import (
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Masked stands for a secret in printed configurations.
const Masked = "<masked>"

// TOML returns the configuration as a TOML file, every setting with its
// description, secrets masked. Loaded back (secrets aside), it gives the
// same Config.
func (c Config) TOML() string {
	var b strings.Builder
	b.WriteString("# titanic configuration.\n")
	b.WriteString("# Precedence: built-in defaults < this file (--config) < TITANIC_<SECTION>_<KEY> environment < flags.\n")
	for _, s := range sections {
		fmt.Fprintf(&b, "\n# %s\n[%s]\n", s.doc, s.name)
		for _, f := range s.fields {
			v := f.value(&c)
			lit := tomlLiteral(v)
			if f.secret && v.String() != "" {
				lit = tomlString(Masked)
			}
			fmt.Fprintf(&b, "# %s\n%s = %s\n", f.usage, f.key, lit)
		}
	}
	return b.String()
}

// Write writes TOML() to w.
func (c Config) Write(w io.Writer) error {
	_, err := io.WriteString(w, c.TOML())
	return err
}

// tomlLiteral is v as a TOML value.
func tomlLiteral(v reflect.Value) string {
	switch v.Type() {
	case durationType:
		return tomlString(formatDuration(time.Duration(v.Int())))
	case sizeType:
		if s := Size(v.Int()); s != 0 && s%KiB == 0 {
			return tomlString(s.String())
		}
		return strconv.FormatInt(v.Int(), 10)
	case stringsType:
		var parts []string
		for _, s := range v.Interface().([]string) {
			parts = append(parts, tomlString(s))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case peersType:
		ps := v.Interface().([]Peer)
		if len(ps) == 0 {
			return "[]"
		}
		var b strings.Builder
		b.WriteString("[\n")
		for _, p := range ps {
			if p.Key != "" {
				fmt.Fprintf(&b, "  {name = %s, cloud = %s, state = %s, key = %s},\n", tomlString(p.Name), tomlString(p.Cloud), tomlString(p.State), tomlString(p.Key))
				continue
			}
			fmt.Fprintf(&b, "  {name = %s, cloud = %s, state = %s},\n", tomlString(p.Name), tomlString(p.Cloud), tomlString(p.State))
		}
		b.WriteString("]")
		return b.String()
	case retriesType:
		rs := v.Interface().([]ServiceRetry)
		if len(rs) == 0 {
			return "[]"
		}
		var b strings.Builder
		b.WriteString("[\n")
		for _, r := range rs {
			fmt.Fprintf(&b, "  {name = %s, max_attempts = %d, backoff_base = %s, backoff_max = %s},\n", tomlString(r.Name), r.MaxAttempts,
				tomlString(formatDuration(r.BackoffBase)), tomlString(formatDuration(r.BackoffMax)))
		}
		b.WriteString("]")
		return b.String()
	}
	switch v.Kind() {
	case reflect.String:
		return tomlString(v.String())
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Float64:
		x := v.Float()
		switch {
		case math.IsNaN(x):
			return "nan"
		case math.IsInf(x, 1):
			return "inf"
		case math.IsInf(x, -1):
			return "-inf"
		}
		s := strconv.FormatFloat(x, 'f', -1, 64)
		if !strings.Contains(s, ".") {
			s += ".0"
		}
		return s
	}
	panic("config: no TOML form for " + v.Type().String())
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\t':
			b.WriteString(`\t`)
		case '\n':
			b.WriteString(`\n`)
		case '\f':
			b.WriteString(`\f`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Markers of the generated configuration reference in README.md.
const (
	RefStart = "<!-- config-reference:start -->"
	RefEnd   = "<!-- config-reference:end -->"
)

// Reference is the Markdown reference of every setting, one table per
// section: key, flag, environment variable, default and description.
// README.md holds it between RefStart and RefEnd (go run
// ./cmd/titanic/config/gen rewrites it).
func Reference() string {
	var b strings.Builder
	b.WriteString("<!-- Generated from cmd/titanic/config: edit the struct tags there and run `go run ./cmd/titanic/config/gen`. -->\n\n")
	b.WriteString("Settings come from the built-in defaults, then the TOML file of `--config FILE` (or `$" + EnvConfig + "`), " +
		"then `TITANIC_<SECTION>_<KEY>` environment variables, then command-line flags; each overrides the one before, " +
		"and only flags given on the command line count. Unknown keys and bad values stop the broker at start-up. " +
		"`titanic config` prints the effective configuration; `testdata/config/` has examples.\n\n")
	b.WriteString("Durations are Go duration strings (`\"2.5s\"`, `\"500ms\"`, `\"168h\"`). " +
		"Sizes are bytes, an integer or a string with a unit (`\"64MiB\"`, `\"10MB\"`: KB, MB, GB, TB are powers of 1000, KiB, MiB, GiB, TiB of 1024), a whole number: no fraction (`\"1536KiB\"`, not `\"1.5MiB\"`). " +
		"Lists are TOML arrays in the file and comma-separated in flags and the environment; " +
		"peering peers are tables `{name, cloud, state}` in the file and `NAME=CLOUD+STATE,...` elsewhere; " +
		"queue services are tables `{name, max_attempts, backoff_base, backoff_max}` in the file and `NAME=ATTEMPTS/BASE/MAX,...` elsewhere.\n")
	d := Default()
	for _, s := range sections {
		fmt.Fprintf(&b, "\n**`[%s]`** %s\n\n", s.name, s.doc)
		b.WriteString("| Key | Flag | Environment | Default | Description |\n")
		b.WriteString("| --- | --- | --- | --- | --- |\n")
		for _, f := range s.fields {
			fmt.Fprintf(&b, "| `%s` | `--%s` | `%s` | %s | %s |\n",
				f.name(), f.flag, f.env, cell("`"+strings.ReplaceAll(tomlLiteral(f.value(&d)), "\n", " ")+"`"), cell(f.usage))
		}
	}
	return b.String()
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// SpliceReference returns doc with the text between RefStart and RefEnd
// replaced by the current Reference. found is false when doc lacks the
// markers (doc is then returned unchanged); markers out of order are an
// error.
func SpliceReference(doc string) (out string, found bool, err error) {
	i, j := strings.Index(doc, RefStart), strings.Index(doc, RefEnd)
	switch {
	case i < 0 && j < 0:
		return doc, false, nil
	case i < 0 || j < 0 || j < i:
		return doc, true, fmt.Errorf("README: want %s, then %s", RefStart, RefEnd)
	case strings.Count(doc, RefStart) > 1 || strings.Count(doc, RefEnd) > 1:
		return doc, true, fmt.Errorf("README: the config reference markers appear more than once")
	}
	return doc[:i+len(RefStart)] + "\n" + Reference() + doc[j:], true, nil
}

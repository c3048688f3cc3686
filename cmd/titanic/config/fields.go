package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// section is one [section] of Config.
type section struct {
	name   string // toml name
	doc    string
	index  int // field index in Config
	fields []*field
}

// field is one setting, described by its struct tags.
type field struct {
	section string
	key     string // toml key within the section
	flag    string
	env     string
	usage   string
	secret  bool
	index   [2]int // section field, setting field
	typ     reflect.Type
}

// name is the dotted key: "broker.listen".
func (f *field) name() string { return f.section + "." + f.key }

// value is the setting's field in c.
func (f *field) value(c *Config) reflect.Value {
	return reflect.ValueOf(c).Elem().Field(f.index[0]).Field(f.index[1])
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	sizeType     = reflect.TypeOf(Size(0))
	stringsType  = reflect.TypeOf([]string(nil))
	peersType    = reflect.TypeOf([]Peer(nil))
	retriesType  = reflect.TypeOf([]ServiceRetry(nil))
)

// EnvPrefix starts every environment variable of the configuration.
const EnvPrefix = "TITANIC_"

// EnvConfig names the config file when --config is not given.
const EnvConfig = EnvPrefix + "CONFIG"

var (
	sections = buildSections()
	byName   = map[string]*field{} // "broker.listen"
	byFlag   = map[string]*field{}
	byEnv    = map[string]*field{}
)

func init() {
	for _, s := range sections {
		for _, f := range s.fields {
			for _, idx := range []struct {
				m map[string]*field
				k string
			}{{byName, f.name()}, {byFlag, f.flag}, {byEnv, f.env}} {
				if _, dup := idx.m[idx.k]; dup || idx.k == "config" {
					panic("config: duplicate setting name " + idx.k)
				}
				idx.m[idx.k] = f
			}
		}
	}
}

// buildSections reads the struct tags of Config. A malformed tag is a
// programming error and panics at start-up (and in every test).
func buildSections() []*section {
	var out []*section
	ct := reflect.TypeOf(Config{})
	for i := 0; i < ct.NumField(); i++ {
		sf := ct.Field(i)
		s := &section{name: sf.Tag.Get("toml"), doc: sf.Tag.Get("doc"), index: i}
		if s.name == "" || sf.Type.Kind() != reflect.Struct {
			panic("config: section " + sf.Name + " needs a toml tag and a struct type")
		}
		for j := 0; j < sf.Type.NumField(); j++ {
			ff := sf.Type.Field(j)
			f := &field{
				section: s.name,
				key:     ff.Tag.Get("toml"),
				flag:    ff.Tag.Get("flag"),
				usage:   ff.Tag.Get("usage"),
				secret:  ff.Tag.Get("secret") == "true",
				index:   [2]int{i, j},
				typ:     ff.Type,
			}
			if f.key == "" || f.flag == "" || f.usage == "" {
				panic("config: setting " + sf.Name + "." + ff.Name + " needs toml, flag and usage tags")
			}
			if !supported(f.typ) {
				panic("config: setting " + f.name() + " has unsupported type " + f.typ.String())
			}
			f.env = EnvPrefix + strings.ToUpper(s.name+"_"+f.key)
			s.fields = append(s.fields, f)
		}
		out = append(out, s)
	}
	return out
}

func supported(t reflect.Type) bool {
	switch t {
	case durationType, sizeType, stringsType, peersType, retriesType:
		return true
	}
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Float64:
		return true
	}
	return false
}

// typeName is the word --help shows for the value of a flag.
func typeName(t reflect.Type) string {
	switch t {
	case durationType:
		return "duration"
	case sizeType:
		return "size"
	case stringsType:
		return "list"
	case peersType:
		return "peers"
	case retriesType:
		return "policies"
	}
	switch t.Kind() {
	case reflect.Int:
		return "int"
	case reflect.Float64:
		return "number"
	}
	return "string"
}

// parseValue reads s, in the command-line and environment syntax, into v.
func parseValue(v reflect.Value, s string) error {
	switch v.Type() {
	case durationType:
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("duration %q: want a Go duration such as 2.5s, 500ms or 1h", s)
		}
		v.SetInt(int64(d))
		return nil
	case sizeType:
		n, err := ParseSize(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(n))
		return nil
	case stringsType:
		v.Set(reflect.ValueOf(splitList(s)))
		return nil
	case peersType:
		ps, err := parsePeers(s)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(ps))
		return nil
	case retriesType:
		rs, err := parseRetries(s)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(rs))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q: want true or false", s)
		}
		v.SetBool(b)
	case reflect.Int:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 0)
		if err != nil {
			return fmt.Errorf("%q: want an integer", s)
		}
		v.SetInt(n)
	case reflect.Float64:
		x, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("%q: want a number", s)
		}
		v.SetFloat(x)
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}

// formatValue prints v in the command-line and environment syntax, so that
// parseValue reads it back.
func formatValue(v reflect.Value) string {
	switch v.Type() {
	case durationType:
		return formatDuration(time.Duration(v.Int()))
	case sizeType:
		return Size(v.Int()).String()
	case stringsType:
		return strings.Join(v.Interface().([]string), ",")
	case peersType:
		var parts []string
		for _, p := range v.Interface().([]Peer) {
			s := p.Name + "=" + p.Cloud + "+" + p.State
			if p.Key != "" {
				s += "+" + p.Key
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ",")
	case retriesType:
		var parts []string
		for _, r := range v.Interface().([]ServiceRetry) {
			parts = append(parts, r.Name+"="+formatRetry(r))
		}
		return strings.Join(parts, ",")
	}
	switch v.Kind() {
	case reflect.String:
		return v.String()
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	}
	return fmt.Sprint(v.Interface())
}

// formatDuration is time.Duration.String without the zero tails: "168h",
// "1m", "2.5s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// splitList splits a comma-separated list, dropping blanks. It never
// returns nil, so that an empty list compares equal to a decoded [].
func splitList(s string) []string {
	out := []string{}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parsePeers reads NAME=CLOUD+STATE[+KEYFILE],...
func parsePeers(s string) ([]Peer, error) {
	out := []Peer{}
	for _, p := range splitList(s) {
		name, eps, ok := strings.Cut(p, "=")
		parts := strings.Split(eps, "+")
		if !ok || len(parts) < 2 || len(parts) > 3 {
			return nil, fmt.Errorf("peer %q: want NAME=CLOUD+STATE (two endpoints), or NAME=CLOUD+STATE+KEYFILE", p)
		}
		peer := Peer{Name: strings.TrimSpace(name), Cloud: strings.TrimSpace(parts[0]), State: strings.TrimSpace(parts[1])}
		if len(parts) == 3 {
			peer.Key = strings.TrimSpace(parts[2])
		}
		out = append(out, peer)
	}
	return out, nil
}

// formatRetry is ATTEMPTS/BASE/MAX, a zero part empty.
func formatRetry(r ServiceRetry) string {
	part := func(zero bool, s string) string {
		if zero {
			return ""
		}
		return s
	}
	return part(r.MaxAttempts == 0, strconv.Itoa(r.MaxAttempts)) + "/" +
		part(r.BackoffBase == 0, formatDuration(r.BackoffBase)) + "/" +
		part(r.BackoffMax == 0, formatDuration(r.BackoffMax))
}

// parseRetries reads NAME=ATTEMPTS/BASE/MAX,... (empty parts: zero).
func parseRetries(s string) ([]ServiceRetry, error) {
	out := []ServiceRetry{}
	for _, p := range splitList(s) {
		name, spec, ok := strings.Cut(p, "=")
		parts := strings.Split(spec, "/")
		if !ok || len(parts) != 3 {
			return nil, fmt.Errorf("service retry %q: want NAME=ATTEMPTS/BASE/MAX (an empty part keeps the default)", p)
		}
		r := ServiceRetry{Name: strings.TrimSpace(name)}
		if a := strings.TrimSpace(parts[0]); a != "" {
			n, err := strconv.Atoi(a)
			if err != nil {
				return nil, fmt.Errorf("service retry %q: attempts %q: want an integer", p, a)
			}
			r.MaxAttempts = n
		}
		for i, d := range []*time.Duration{&r.BackoffBase, &r.BackoffMax} {
			if t := strings.TrimSpace(parts[i+1]); t != "" {
				v, err := time.ParseDuration(t)
				if err != nil {
					return nil, fmt.Errorf("service retry %q: duration %q: want a Go duration such as 2.5s", p, t)
				}
				*d = v
			}
		}
		out = append(out, r)
	}
	return out, nil
}

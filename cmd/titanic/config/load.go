package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// ConfigFlag is the flag naming the config file.
const ConfigFlag = "config"

// RegisterFlags registers --config and one flag per setting on fs. The flags
// write into c, whose values --help shows as the defaults; pass a Default()
// config. Resolve later applies only the flags given on the command line.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.String(ConfigFlag, "", "TOML config `FILE` (default $"+EnvConfig+"); what it does not set takes the built-in defaults")
	for _, s := range sections {
		for _, f := range s.fields {
			fv := &flagValue{f: f, v: f.value(c)}
			if f.typ.Kind() == reflect.Bool {
				fs.Var(&boolValue{*fv}, f.flag, flagUsage(f))
			} else {
				fs.Var(fv, f.flag, flagUsage(f))
			}
		}
	}
}

func flagUsage(f *field) string {
	u := fmt.Sprintf("%s [%s, $%s", f.usage, f.name(), f.env)
	if f.typ.Kind() != reflect.Bool {
		// flag.PrintDefaults shows the back-quoted word as the value's name.
		u += ", `" + typeName(f.typ) + "`"
	}
	return u + "]"
}

// flagValue is the flag.Value of a setting.
type flagValue struct {
	f *field
	v reflect.Value
}

func (fv *flagValue) String() string {
	if fv == nil || !fv.v.IsValid() {
		return ""
	}
	if fv.f.secret && fv.v.String() != "" {
		return Masked
	}
	return formatValue(fv.v)
}

func (fv *flagValue) Set(s string) error { return parseValue(fv.v, s) }

// Get returns the typed value (flag.Getter).
func (fv *flagValue) Get() any { return fv.v.Interface() }

func (fv *flagValue) setting() *flagValue { return fv }

// boolValue is the flag.Value of a boolean setting: it may be given as a
// bare --flag, and --help does not show its default when it is false.
type boolValue struct{ flagValue }

func (bv *boolValue) IsBoolFlag() bool { return true }

func (bv *boolValue) String() string {
	if bv == nil || !bv.v.IsValid() {
		return "false" // the zero value, which --help leaves out
	}
	return bv.flagValue.String()
}

func (bv *boolValue) setting() *flagValue { return &bv.flagValue }

// settingValue is implemented by the flags of settings.
type settingValue interface{ setting() *flagValue }

// Load is the whole start-up sequence for a command whose flags are only
// the configuration: it registers the flags on fs (unless RegisterFlags
// already did; a nil fs is a silent new one), parses args, and returns
// Resolve's result. Errors of fs.Parse (flag.ErrHelp included) come back as
// they are; after it, fs.Args() holds the arguments that are not flags.
func Load(args, environ []string, fs *flag.FlagSet) (Config, error) {
	if fs == nil {
		fs = flag.NewFlagSet("titanic", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
	}
	if fs.Lookup(ConfigFlag) == nil {
		d := Default()
		d.RegisterFlags(fs)
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	return Resolve(fs, environ)
}

// Resolve builds the effective configuration after fs has parsed the
// command line: the defaults, then the file of --config (or
// $TITANIC_CONFIG), then the TITANIC_* variables of environ (os.Environ()
// form), then the flags set on the command line (fs.Visit), and validates
// it. On a validation error the config is returned too, for display; any
// other error returns the zero Config. A nil fs means no flags.
//
// Every error names where the value came from: the file and its line, the
// environment variable or the flag.
func Resolve(fs *flag.FlagSet, environ []string) (Config, error) {
	c := Default()
	origin := origins{}
	path := lookupEnv(environ, EnvConfig)
	if fs != nil && isSet(fs, ConfigFlag) {
		path = fs.Lookup(ConfigFlag).Value.String()
	}
	if path != "" {
		if err := c.loadFile(path, origin); err != nil {
			return Config{}, err
		}
	}
	if err := c.applyEnv(environ, origin); err != nil {
		return Config{}, err
	}
	if fs != nil {
		c.applyFlags(fs, origin)
	}
	return c, c.validate(origin)
}

// origins says where each setting given (by its name, section.key) came
// from: "config file PATH line N", "environment TITANIC_..." or "flag
// --...". Validation errors name it.
type origins map[string]string

func (o origins) set(name, where string) {
	if o != nil {
		o[name] = where
	}
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func lookupEnv(environ []string, key string) string {
	v := ""
	for _, kv := range environ {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// LoadFile overlays the settings of a TOML file on c: keys the file sets
// replace c's values, the others stay. An unknown key, a value of the wrong
// type or a duration given as a bare number is an error naming the file and
// the key, wrapping ErrInvalid.
func (c *Config) LoadFile(path string) error { return c.loadFile(path, nil) }

func (c *Config) loadFile(path string, origin origins) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	return c.decode(path, string(data), origin)
}

// Decode is LoadFile for TOML text; name stands for the file in errors.
func (c *Config) Decode(name, text string) error { return c.decode(name, text, nil) }

func (c *Config) decode(name, text string, origin origins) error {
	var fc Config
	md, err := toml.Decode(text, &fc)
	lines := keyLines(text)
	if err != nil {
		if msg := listAsString(name, text, lines, err); msg != "" {
			return fmt.Errorf("%w: %s", ErrInvalid, msg)
		}
		return fmt.Errorf("%w: config file %s: %v", ErrInvalid, name, err)
	}
	if err := unknownKeys(name, md.Undecoded(), lines); err != nil {
		return err
	}
	var errs []error
	for _, s := range sections {
		for _, f := range s.fields {
			if !md.IsDefined(f.section, f.key) {
				continue
			}
			where := "config file " + name
			if n, ok := lines[f.name()]; ok {
				where += " line " + strconv.Itoa(n)
			}
			if f.typ == durationType && md.Type(f.section, f.key) != "String" {
				errs = append(errs, fmt.Errorf("%w: %s: %s: a duration is a string such as \"2.5s\" or \"500ms\" (a bare number would be nanoseconds)", ErrInvalid, where, f.name()))
				continue
			}
			f.value(c).Set(cloneValue(f.value(&fc)))
			origin.set(f.name(), where)
		}
	}
	return errors.Join(errs...)
}

var stringForList = regexp.MustCompile(`\(last key "([^"]+)"\): incompatible types: TOML value has type string; destination has type slice`)

// listAsString says what to write when err is the decoder's refusal of
// a plain string for a list setting (listen = "tcp://...", as its
// environment variable takes one): the list form, with the value given;
// "" for any other error. The decoder's own words name Go's types.
func listAsString(name, text string, lines map[string]int, err error) string {
	// The decoder says it as text only: toml: line 2 (last key
	// "broker.listen"): incompatible types: TOML value has type string;
	// destination has type slice.
	m := stringForList.FindStringSubmatch(err.Error())
	if m == nil {
		return ""
	}
	f, ok := byName[m[1]]
	if !ok {
		return ""
	}
	where := "config file " + name
	value := "..."
	if n, ok := lines[f.name()]; ok {
		where += " line " + strconv.Itoa(n)
		if _, v, ok := strings.Cut(strings.Split(text, "\n")[n-1], "="); ok {
			value = strings.TrimSpace(v)
			if q, rest, ok := strings.Cut(value[min(len(value), 1):], `"`); ok && strings.HasPrefix(value, `"`) && !strings.HasPrefix(strings.TrimSpace(rest), `"`) {
				value = `"` + q + `"` // without a comment after it
			}
		}
	}
	return fmt.Sprintf("%s: %s (--%s) is a list, even of one: write %s = [%s]", where, f.name(), f.flag, f.key, value)
}

// keyLines maps the keys of a TOML text (section.key, and each [table]
// by its name) to the line that sets them, for errors: a plain reading of
// table headers and key = value lines, which skips the lines of
// multi-line strings.
func keyLines(text string) map[string]int {
	lines := map[string]int{}
	table, multi := "", ""
	for i, line := range strings.Split(text, "\n") {
		l := strings.TrimSpace(line)
		if multi != "" {
			if strings.Contains(l, multi) {
				multi = ""
			}
			continue
		}
		if l == "" || l[0] == '#' {
			continue
		}
		if l[0] == '[' {
			h, _, _ := strings.Cut(strings.TrimLeft(l, "["), "]")
			table = normKey(h)
			if _, ok := lines[table]; !ok {
				lines[table] = i + 1
			}
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		key := normKey(k)
		if table != "" {
			key = table + "." + key
		}
		if _, ok := lines[key]; !ok {
			lines[key] = i + 1
		}
		v = strings.TrimSpace(v)
		for _, d := range []string{`"""`, `'''`} {
			if strings.HasPrefix(v, d) && !strings.Contains(v[len(d):], d) {
				multi = d
			}
		}
	}
	return lines
}

// normKey writes a TOML key (dotted, its parts maybe quoted or spaced)
// as toml.Key.String does for plain parts.
func normKey(k string) string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}

// unknownKeys reports the keys the file has and Config does not, outermost
// only: an unknown [section] is named, not each of its keys; each with
// its line.
func unknownKeys(name string, keys []toml.Key, lines map[string]int) error {
	var names []string
	reported := map[string]bool{}
	for _, k := range keys {
		skip := false
		for i := 1; i < len(k); i++ {
			skip = skip || reported[toml.Key(k[:i]).String()]
		}
		if skip {
			continue
		}
		reported[k.String()] = true
		n := fmt.Sprintf("%q", k.String())
		if line, ok := lines[k.String()]; ok {
			n += " at line " + strconv.Itoa(line)
		}
		if hint := suggest(k); hint != "" {
			n += " (did you mean " + hint + "?)"
		}
		names = append(names, n)
	}
	switch len(names) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("%w: config file %s: unknown key %s", ErrInvalid, name, names[0])
	}
	return fmt.Errorf("%w: config file %s: unknown keys %s", ErrInvalid, name, strings.Join(names, ", "))
}

// suggest names the setting an unknown key was probably meant to be.
func suggest(k toml.Key) string {
	last := k[len(k)-1]
	if len(k) == 1 {
		for _, s := range sections {
			if editDistance(s.name, last) <= 2 {
				return "[" + s.name + "]"
			}
		}
	}
	// The key in another section, or named as its flag.
	for _, s := range sections {
		for _, f := range s.fields {
			if f.key == last || f.flag == strings.ReplaceAll(last, "_", "-") {
				if len(k) == 1 || k[0] != f.section || f.key != last {
					return f.name()
				}
			}
		}
	}
	best, bestD := "", 3
	for n := range byName {
		if d := editDistance(n, k.String()); d < bestD || d == bestD && n < best {
			best, bestD = n, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// ApplyEnv overlays the TITANIC_<SECTION>_<KEY> variables of environ
// (os.Environ() form) on c. A variable naming a section but no setting of
// it is an error (a typo would otherwise be silently ignored), and so is
// one that is a setting's variable misspelt (its section, or a couple of
// letters: see misspeltEnv); other TITANIC_* variables (TITANIC_CONFIG,
// TITANIC_BROKERS) are not settings and are left alone.
func (c *Config) ApplyEnv(environ []string) error { return c.applyEnv(environ, nil) }

func (c *Config) applyEnv(environ []string, origin origins) error {
	var errs []error
	for _, kv := range environ { // in order: the last of duplicates wins

		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, EnvPrefix) {
			continue
		}
		if f, ok := byEnv[k]; ok {
			if err := parseValue(f.value(c), v); err != nil {
				errs = append(errs, fmt.Errorf("%w: environment %s: %v", ErrInvalid, k, err))
			}
			origin.set(f.name(), "environment "+k)
			continue
		}
		sec, _, _ := strings.Cut(strings.TrimPrefix(k, EnvPrefix), "_")
		known := false
		for _, s := range sections {
			if strings.EqualFold(s.name, sec) {
				known = true
				hint := ""
				if h := suggestEnv(k); h != "" {
					hint = " (did you mean " + h + "?)"
				}
				errs = append(errs, fmt.Errorf("%w: environment %s: no such setting in [%s]%s", ErrInvalid, k, s.name, hint))
			}
		}
		if h := misspeltEnv(k); !known && h != "" {
			errs = append(errs, fmt.Errorf("%w: environment %s: no such setting (did you mean %s?)", ErrInvalid, k, h))
		}
	}
	return errors.Join(errs...)
}

// notSettings are the TITANIC_* variables that are no settings, which
// misspeltEnv never takes for a misspelt one.
var notSettings = map[string]bool{EnvConfig: true, "TITANIC_BROKERS": true, "TITANIC_PARSE_ONLY": true, "TITANIC_BIN": true}

// misspeltEnv returns the setting's variable that k, a TITANIC_* variable
// of no section, was probably meant to be: one whose section is spelt
// close to k's and whose key is k's (TITANIC_SECURTY_CURVE), or one a
// couple of letters away. Other TITANIC_* variables (TITANIC_BROKERS,
// the tests') are not settings and are left alone.
func misspeltEnv(k string) string {
	if notSettings[k] {
		return ""
	}
	sec, key, ok := strings.Cut(strings.TrimPrefix(k, EnvPrefix), "_")
	if ok && key != "" {
		for _, s := range sections {
			if d := editDistance(strings.ToLower(sec), s.name); d > 0 && d <= 2 {
				if n := EnvPrefix + strings.ToUpper(s.name) + "_" + key; byEnv[n] != nil {
					return n
				}
			}
		}
	}
	if h := suggestEnv(k); h != "" && editDistance(h, k) <= 2 {
		return h
	}
	return ""
}

func suggestEnv(k string) string {
	best, bestD := "", 3
	for n := range byEnv {
		if d := editDistance(n, k); d < bestD || d == bestD && n < best {
			best, bestD = n, d
		}
	}
	return best
}

// ApplyFlags overlays on c the settings given on the command line parsed by
// fs (registered by RegisterFlags); flags left at their defaults do not
// count.
func (c *Config) ApplyFlags(fs *flag.FlagSet) { c.applyFlags(fs, nil) }

func (c *Config) applyFlags(fs *flag.FlagSet, origin origins) {
	fs.Visit(func(fl *flag.Flag) {
		if sv, ok := fl.Value.(settingValue); ok {
			if fv := sv.setting(); fv.f != nil {
				fv.f.value(c).Set(cloneValue(fv.v))
				origin.set(fv.f.name(), "flag --"+fl.Name)
			}
		}
	})
}

// cloneValue copies slices, so that two configs never share a backing
// array.
func cloneValue(v reflect.Value) reflect.Value {
	if v.Kind() != reflect.Slice {
		return v
	}
	out := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
	reflect.Copy(out, v)
	return out
}

package upgrade

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"
)

// Release is one line of the RELEASES file.
type Release struct {
	Version string // vMAJOR.MINOR.PATCH
	Commit  string // full commit hash
	Note    string
}

var (
	versionRE = regexp.MustCompile(`^v\d+\.\d+\.\d+$`)
	commitRE  = regexp.MustCompile(`^[0-9a-f]{40}$`)
)

// ParseReleases reads a RELEASES file: "VERSION COMMIT [note...]" per
// line, oldest first; blank lines and lines starting with # are skipped.
func ParseReleases(r io.Reader) ([]Release, error) {
	var out []Release
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("RELEASES line %d: want VERSION COMMIT [note], got %q", n, line)
		}
		if !versionRE.MatchString(f[0]) {
			return nil, fmt.Errorf("RELEASES line %d: version %q is not vMAJOR.MINOR.PATCH", n, f[0])
		}
		if !commitRE.MatchString(f[1]) {
			return nil, fmt.Errorf("RELEASES line %d: commit %q is not a full 40-digit hash", n, f[1])
		}
		if seen[f[0]] {
			return nil, fmt.Errorf("RELEASES line %d: version %s listed twice", n, f[0])
		}
		seen[f[0]] = true
		out = append(out, Release{Version: f[0], Commit: f[1], Note: strings.Join(f[2:], " ")})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// RepoRoot is the root of the source tree this package was compiled from.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Releases reads root/RELEASES.
func Releases(root string) ([]Release, error) {
	f, err := os.Open(filepath.Join(root, "RELEASES"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseReleases(f)
}

// Latest returns the last release of root/RELEASES: the one the current
// code must run beside.
func Latest(root string) (Release, error) {
	rs, err := Releases(root)
	if err != nil {
		return Release{}, err
	}
	if len(rs) == 0 {
		return Release{}, errors.New("RELEASES lists no release")
	}
	return rs[len(rs)-1], nil
}

// ErrNoHistory: the clone does not hold a release's commit (a shallow
// clone, or no git repository at all). The caller skips, saying so.
var ErrNoHistory = errors.New("release commit not in this checkout's git history")

// HasCommit returns nil when root's git repository holds commit, or an
// error wrapping ErrNoHistory that says why not (shallow clone, no git).
func HasCommit(ctx context.Context, root, commit string) error {
	if _, err := exec.LookPath("git"); err != nil {
		return fmt.Errorf("%w: no git command", ErrNoHistory)
	}
	out, err := git(ctx, root, "rev-parse", "--is-shallow-repository")
	if err != nil {
		return fmt.Errorf("%w: %s is not a git checkout: %v", ErrNoHistory, root, err)
	}
	shallow := strings.TrimSpace(string(out)) == "true"
	if _, err := git(ctx, root, "cat-file", "-e", commit+"^{commit}"); err != nil {
		if shallow {
			return fmt.Errorf("%w: commit %s is missing and the clone is shallow (fetch the history: git fetch --unshallow)", ErrNoHistory, commit)
		}
		return fmt.Errorf("%w: commit %s is missing from a full clone: RELEASES names a commit this repository never had", ErrNoHistory, commit)
	}
	return nil
}

// CacheDir is where built releases are kept: $TITANIC_RELEASE_CACHE, or
// titanic/releases under the user's cache directory (the Go build cache's
// neighbour), or under the temp directory.
func CacheDir() string {
	if d := os.Getenv("TITANIC_RELEASE_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "titanic", "releases")
	}
	return filepath.Join(os.TempDir(), "titanic-releases")
}

// Build returns the path of the titanic binary of commit, built from
// root's git history into cacheDir/<commit>/titanic (version stamped
// with version) unless a build is already there. It extracts the commit's
// tree with git archive into a temporary directory (no worktree is
// registered in the repository, so nothing is left in it if the test
// dies) and removes that directory when done. built reports whether it
// built (false: cached); took is how long the build took.
func Build(ctx context.Context, root, cacheDir, commit, version string) (bin string, built bool, took time.Duration, err error) {
	if !commitRE.MatchString(commit) {
		return "", false, 0, fmt.Errorf("build release: %q is not a full commit hash", commit)
	}
	bin = filepath.Join(cacheDir, commit, "titanic")
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return bin, false, 0, nil
	}
	if err := HasCommit(ctx, root, commit); err != nil {
		return "", false, 0, err
	}
	start := time.Now()
	src, err := os.MkdirTemp("", "titanic-release-src-")
	if err != nil {
		return "", false, 0, err
	}
	defer os.RemoveAll(src)
	if err := extract(ctx, root, commit, src); err != nil {
		return "", false, 0, fmt.Errorf("build release %s: %w", version, err)
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", false, 0, err
	}
	// Build beside the final name and rename: a concurrent or killed
	// build never leaves a half-written binary at bin.
	tmp := fmt.Sprintf("%s.tmp-%d", bin, os.Getpid())
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X main.Version="+version, "-o", tmp, "./cmd/titanic")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", false, 0, fmt.Errorf("build release %s (%s): go build: %w\n%s", version, commit, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		os.Remove(tmp)
		return "", false, 0, err
	}
	return bin, true, time.Since(start), nil
}

// extract writes commit's tree into dir (git archive, read as a tar).
func extract(ctx context.Context, root, commit, dir string) error {
	cmd := exec.CommandContext(ctx, "git", "-C", root, "archive", "--format=tar", commit)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("git archive: %w", err)
	}
	terr := untar(out, dir)
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("git archive %s: %w: %s", commit, err, stderr.String())
	}
	return terr
}

func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		name := filepath.Clean(h.Name)
		if name == "." || strings.HasPrefix(name, "..") || filepath.IsAbs(name) {
			continue
		}
		path := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o777|0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(h.Linkname, path); err != nil {
				return err
			}
		}
	}
}

// git runs git -C root args and returns its standard output.
func git(ctx context.Context, root string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", root}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

package upgrade

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestParseReleases(t *testing.T) {
	const c1 = "9f42b8d9d3f5c669622cef4351e2989e49aea94f"
	rs, err := ParseReleases(strings.NewReader("# comment\n\nv0.1.0 " + c1 + " first wave\nv0.2.0 " + strings.Repeat("a", 40) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0] != (Release{"v0.1.0", c1, "first wave"}) || rs[1].Version != "v0.2.0" || rs[1].Note != "" {
		t.Fatalf("parsed %+v", rs)
	}
	for _, bad := range []string{
		"v0.1.0\n",                        // no commit
		"0.1.0 " + c1 + "\n",              // no v
		"v0.1.0 9f42b8d\n",                // short hash: ambiguous one day
		"v0.1.0 " + c1 + "\nv0.1.0 " + c1, // twice
	} {
		if _, err := ParseReleases(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseReleases(%q) accepted it", bad)
		}
	}
}

// TestReleasesFile checks the repository's RELEASES: the first-wave
// baseline is v0.1.0 at 9f42b8d, and, when the checkout has git history,
// every recorded commit is in it.
func TestReleasesFile(t *testing.T) {
	root := RepoRoot()
	rs, err := Releases(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) == 0 || rs[0].Version != "v0.1.0" || !strings.HasPrefix(rs[0].Commit, "9f42b8d") {
		t.Fatalf("RELEASES does not start with v0.1.0 = 9f42b8d…: %+v", rs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, r := range rs {
		err := HasCommit(ctx, root, r.Commit)
		if errors.Is(err, ErrNoHistory) && strings.Contains(err.Error(), "shallow") {
			t.Logf("release %s: %v", r.Version, err)
			continue
		}
		if err != nil {
			t.Errorf("release %s: %v", r.Version, err)
		}
	}
}

// TestBuildPrevious builds the previous release from its commit (or finds
// it cached) and checks that the binary says it is that release.
func TestBuildPrevious(t *testing.T) {
	rel, bin := previous(t)
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s version: %v\n%s", bin, err, out)
	}
	if !strings.Contains(string(out), rel.Version) {
		t.Fatalf("%s version printed %q, want it to name %s", bin, out, rel.Version)
	}
}

// TestHasCommitShallow: in a shallow clone the release commit is missing
// and HasCommit says so (the mixed-version tests then skip with that
// message); in a full clone, as CI's, it is there.
func TestHasCommitShallow(t *testing.T) {
	root := RepoRoot()
	rel, err := Latest(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := HasCommit(ctx, root, rel.Commit); err != nil {
		t.Skipf("this checkout itself lacks the history: %v", err)
	}
	for _, depth := range []string{"1", ""} {
		dir := t.TempDir()
		args := []string{"clone", "-q", "--no-checkout"}
		if depth != "" {
			args = append(args, "--depth", depth)
		}
		args = append(args, "file://"+root, dir)
		if out, err := exec.CommandContext(ctx, "git", args...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		err := HasCommit(ctx, dir, rel.Commit)
		switch {
		case depth != "" && (!errors.Is(err, ErrNoHistory) || !strings.Contains(err.Error(), "shallow")):
			t.Errorf("shallow clone: HasCommit = %v, want ErrNoHistory naming the shallow clone", err)
		case depth == "" && err != nil:
			t.Errorf("full clone: HasCommit = %v, want the commit there", err)
		}
	}
}

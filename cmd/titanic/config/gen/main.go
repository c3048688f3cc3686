// Command gen rewrites the configuration reference of README.md, between
// the markers <!-- config-reference:start --> and
// <!-- config-reference:end -->, from the config struct:
//
//	go run ./cmd/titanic/config/gen            (from the repository root)
//	go run ./cmd/titanic/config/gen -check     (exit 1 if it is stale)
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/titanicmq/titanic/cmd/titanic/config"
)

func main() {
	readme := flag.String("readme", "README.md", "the file to rewrite")
	check := flag.Bool("check", false, "only report whether the reference is up to date")
	flag.Parse()
	if err := run(*readme, *check); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(path string, check bool) error {
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, found, err := config.SpliceReference(string(doc))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if !found {
		return fmt.Errorf("%s has no %s ... %s markers: add them where the reference goes", path, config.RefStart, config.RefEnd)
	}
	if out == string(doc) {
		return nil
	}
	if check {
		return fmt.Errorf("%s: the configuration reference is stale: run go run ./cmd/titanic/config/gen", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte(out), fi.Mode().Perm()); err != nil {
		return err
	}
	fmt.Printf("%s: configuration reference updated\n", path)
	return nil
}

// composecheck loads a docker compose stack with the Compose Specification's
// reference Go library (the loader `docker compose` itself uses): schema
// validation, interpolation from an env file, merging of overlays and the
// consistency checks (depends_on, networks, volumes). On success it prints the
// resolved project as JSON, which tests/unit/test_compose.py inspects; on
// failure it prints the loader's error and exits 1.
//
// Usage: composecheck -project-directory compose -env-file compose/.env.example \
//
//	-f compose/base.yaml -f compose/nvidia.yaml
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(v string) error { *f = append(*f, v); return nil }

func main() {
	var composeFiles files
	flag.Var(&composeFiles, "f", "compose file (repeatable, later files override)")
	dir := flag.String("project-directory", ".", "project directory (relative paths resolve here)")
	envFile := flag.String("env-file", "", "env file for interpolation")
	name := flag.String("project-name", "sluicegate", "project name")
	flag.Parse()
	if len(composeFiles) == 0 {
		fmt.Fprintln(os.Stderr, "composecheck: at least one -f FILE is needed")
		os.Exit(2)
	}
	opts := []cli.ProjectOptionsFn{
		cli.WithWorkingDirectory(*dir),
		cli.WithName(*name),
		cli.WithResolvedPaths(true),
	}
	if *envFile != "" {
		opts = append(opts, cli.WithEnvFiles(*envFile), cli.WithDotEnv)
	}
	options, err := cli.NewProjectOptions(composeFiles, opts...)
	if err != nil {
		fail(err)
	}
	project, err := cli.ProjectFromOptions(context.Background(), options)
	if err != nil {
		fail(err)
	}
	out, err := json.MarshalIndent(project, "", "  ")
	if err != nil {
		fail(err)
	}
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "composecheck: %v\n", err)
	os.Exit(1)
}

package main

import (
	"context"
	"io"

	"github.com/projector/projector/pkg/service"
)

// run runs the example service's command line in process, as main does.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return service.Run(ctx, config(), args, stdout, stderr)
}

// exitCode is the exit status a command asks for.
type exitCode = service.ExitCode

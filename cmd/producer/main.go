// Command producer publishes events into the log.
package main

import (
	"fmt"
	"os"
)

const usage = `producer publishes events into the log.

Usage: producer COMMAND [flags]

Commands (landing with issue 3; each says so and exits non-zero until then):
  send       one event from flags or JSON
  import     JSON-lines events from a file or stdin
  generate   a deterministic synthetic workload of the example domain
  serve      an HTTP ingest API

Environment: KAFKA_BROKERS.
`

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		fmt.Print(usage)
		return
	}
	fmt.Fprintf(os.Stderr, "producer %s: not built yet; see `producer --help`\n", os.Args[1])
	os.Exit(2)
}

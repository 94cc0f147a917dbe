// Command projector runs a projection service: it builds a PostgreSQL read model from
// the event log and keeps it current.
package main

import (
	"fmt"
	"os"
)

const usage = `projector builds and serves a read model from the event log.

Usage: projector COMMAND [flags]

Commands (none has landed yet; each says so and exits non-zero):
  run        consume the log into the read model and serve HTTP       (issue 4)
  status     per-partition state, lag, events/s and ETA               (issue 4)
  dlq        list and retry parked events                             (issue 4)
  snapshot   create, list, show, restore and prune snapshots          (issue 6)
  replay     rebuild the read model as of a time into another schema  (issue 6)

Environment: KAFKA_BROKERS, DATABASE_URL, REDIS_URL, SMTP_ADDR.
`

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		fmt.Print(usage)
		return
	}
	fmt.Fprintf(os.Stderr, "projector %s: not built yet; see `projector --help`\n", os.Args[1])
	os.Exit(2)
}

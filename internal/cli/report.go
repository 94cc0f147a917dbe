package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteList prints items as indented JSON, or as a table under header, a row each.
func WriteList[T any](w io.Writer, asJSON bool, items []T, header string, row func(T) string) error {
	if asJSON {
		return WriteIndented(w, items)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, header)
	for _, it := range items {
		_, _ = fmt.Fprintln(tw, row(it))
	}
	return tw.Flush()
}

// OneLine shortens a message for a table cell: its first 100 bytes, on one line.
func OneLine(msg string) string {
	if len(msg) > 100 {
		msg = msg[:100] + "…"
	}
	return strings.ReplaceAll(msg, "\n", " ")
}

// WriteIndented prints v as JSON indented by two spaces.
func WriteIndented(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// TableProgress prints a line per table copied (verb: wrote, loaded): snapshots copy
// at hundreds of MB/s, so a line per table is the progress worth showing.
func TableProgress(out io.Writer, verb string) func(table string, rows, bytes int64, took time.Duration) {
	return func(table string, rows, bytes int64, took time.Duration) {
		rate := float64(bytes) / max(took.Seconds(), 1e-6) / (1 << 20)
		_, _ = fmt.Fprintf(out, "  %s %-12s %9d rows %10d bytes  %6.1f MB/s\n", verb, table, rows, bytes, rate)
	}
}

package service

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// writeList prints items as indented JSON, or as a table under header, a row each.
func writeList[T any](w io.Writer, asJSON bool, items []T, header string, row func(T) string) error {
	if asJSON {
		return writeIndented(w, items)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, header)
	for _, it := range items {
		_, _ = fmt.Fprintln(tw, row(it))
	}
	return tw.Flush()
}

func short(msg string) string {
	if len(msg) > 100 {
		msg = msg[:100] + "…"
	}
	return strings.ReplaceAll(msg, "\n", " ")
}

func writeIndented(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

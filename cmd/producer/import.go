package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/events"
)

// Defaults for import.
const (
	importChunkDefault = 1000
	maxLineBytes       = 1 << 20
)

func runImport(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var c common
	var dryRun bool
	var chunk int
	f := cli.NewFlags("import", `producer import FILE|-: publish JSON-lines events, one CloudEvents JSON object a line.

Lines are validated before they are sent, in chunks. At the first bad line the
events before it are sent, nothing after it is, and the error names the line; the
summary says exactly which lines were sent. --dry-run validates the whole input
and sends nothing: it reports every bad line (its number and what is wrong) and
exits 1 when there is any.`)
	c.register(f)
	f.Bool(&dryRun, "dry-run", "", false, "validate every line, send nothing")
	f.Int(&chunk, "chunk", "", importChunkDefault, "events validated, then sent, together")
	if err := f.Parse(args, stdout); err != nil {
		return err
	}
	if len(f.Args()) != 1 {
		return errors.New("import takes one argument: a file, or - for standard input")
	}
	if chunk < 1 {
		return fmt.Errorf("--chunk %d: must be at least 1", chunk)
	}
	in := stdin
	if name := f.Args()[0]; name != "-" {
		file, err := os.Open(name)
		if err != nil {
			return err
		}
		defer func() { _ = file.Close() }()
		in = file
	}

	var pub *outlet
	if !dryRun {
		p, _, err := c.open(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = p.Close() }()
		pub = p
	}
	imp := importer{pub: pub, out: stderr, report: stdout, progress: cli.IsTerminal(os.Stderr), start: time.Now()}
	err := imp.run(ctx, in, chunk)
	imp.summary(stdout, dryRun, err)
	return err
}

type importer struct {
	pub      *outlet
	out      io.Writer
	progress bool
	start    time.Time
	sent     int // events acknowledged
	lastSent int // line number of the last line sent (all lines up to it were sent)

	lastAttempted int   // when a send failed: the last line of the chunk it was sending
	failed        []int // when a send failed: the lines of that chunk not acknowledged
	valid         int   // lines validated
	bad           int   // --dry-run: bad lines, each reported to report
	report        io.Writer
}

// badLine handles a line that cannot be sent: a dry run reports it and goes on (it
// returns nil); a real import stops there, sending the events before it first.
func (im *importer) badLine(lineNo int, err error, flush func() error) error {
	if im.pub == nil {
		im.bad++
		_, _ = fmt.Fprintf(im.report, "line %d: %v\n", lineNo, err)
		return nil
	}
	if ferr := flush(); ferr != nil {
		return ferr
	}
	return fmt.Errorf("line %d: %w", lineNo, err)
}

func (im *importer) run(ctx context.Context, in io.Reader, chunk int) error {
	r := bufio.NewReaderSize(in, 64<<10)
	b := &importBatch{}
	lineNo := 0
	flush := func() error { return im.flush(ctx, b) }
	for {
		line, err := readLine(r)
		if errors.Is(err, io.EOF) && line == nil {
			if err := flush(); err != nil {
				return err
			}
			if im.bad > 0 {
				return fmt.Errorf("%d bad lines of %d", im.bad, lineNo)
			}
			return nil
		}
		lineNo++
		if errors.Is(err, errLineTooLong) {
			if err := im.badLine(lineNo, err, flush); err != nil {
				return err
			}
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			if ferr := flush(); ferr != nil {
				return ferr
			}
			return fmt.Errorf("line %d: %w", lineNo, err)
		}
		if strings.TrimSpace(string(line)) == "" {
			continue
		}
		e, perr := events.ParseStructured(line)
		if perr != nil {
			if err := im.badLine(lineNo, perr, flush); err != nil {
				return err
			}
			continue
		}
		im.valid++
		b.events = append(b.events, e)
		b.lines = append(b.lines, lineNo)
		if len(b.events) >= chunk {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

// importBatch is the events read and not yet published, with their line numbers.
type importBatch struct {
	events []events.Event
	lines  []int
}

// flush publishes the batch. On a failure it counts what landed and names what did
// not; the failure ends the import.
func (im *importer) flush(ctx context.Context, b *importBatch) error {
	if len(b.events) == 0 || im.pub == nil {
		b.events, b.lines = b.events[:0], b.lines[:0]
		return nil
	}
	res, err := im.pub.Publish(ctx, b.events...)
	if err != nil {
		im.lastAttempted = b.lines[len(b.lines)-1]
		for i, rr := range res {
			if rr.Err != nil {
				im.failed = append(im.failed, b.lines[i])
			} else {
				im.sent++
			}
		}
		return err
	}
	im.sent += len(b.events)
	im.lastSent = b.lines[len(b.lines)-1]
	b.events, b.lines = b.events[:0], b.lines[:0]
	im.tick()
	return nil
}

var errLineTooLong = fmt.Errorf("line longer than %d bytes", maxLineBytes)

// readLine returns one line without its newline; a line longer than maxLineBytes is an error.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		part, isPrefix, err := r.ReadLine()
		line = append(line, part...)
		if len(line) > maxLineBytes {
			for isPrefix && err == nil { // skip the rest of the line
				_, isPrefix, err = r.ReadLine()
			}
			return []byte{}, errLineTooLong
		}
		if err != nil {
			if len(line) > 0 && errors.Is(err, io.EOF) {
				return line, nil
			}
			return nil, err
		}
		if !isPrefix {
			return line, nil
		}
	}
}

func (im *importer) tick() {
	if !im.progress {
		return
	}
	secs := time.Since(im.start).Seconds()
	_, _ = fmt.Fprintf(im.out, "\rimport: %d events sent (%.0f/s)   ", im.sent, float64(im.sent)/max(secs, 1e-9))
}

func (im *importer) summary(out io.Writer, dryRun bool, err error) {
	if im.progress {
		_, _ = fmt.Fprintln(im.out)
	}
	switch {
	case dryRun && im.bad == 0 && err == nil:
		_, _ = fmt.Fprintf(out, "import: %d events valid; nothing sent (--dry-run)\n", im.valid)
	case dryRun && im.bad > 0:
		_, _ = fmt.Fprintf(out, "import: %d events valid, %d lines bad (listed above); nothing sent (--dry-run)\n", im.valid, im.bad)
	case dryRun:
		_, _ = fmt.Fprintf(out, "import: %d events valid before the input failed; nothing sent (--dry-run)\n", im.valid)
	case err == nil:
		_, _ = fmt.Fprintf(out, "import: sent %d events in %.1fs\n", im.sent, time.Since(im.start).Seconds())
	case len(im.failed) > 0:
		shown := im.failed[:min(len(im.failed), 20)]
		_, _ = fmt.Fprintf(out, "import: sent %d events; %d lines of the last chunk were not acknowledged (they may or may not be in the log): %v; nothing after line %d was sent\n",
			im.sent, len(im.failed), shown, im.lastAttempted)
	case im.sent == 0:
		_, _ = fmt.Fprintln(out, "import: sent nothing")
	default:
		_, _ = fmt.Fprintf(out, "import: sent %d events, every line up to line %d; nothing after line %d was sent\n",
			im.sent, im.lastSent, im.lastSent)
	}
}

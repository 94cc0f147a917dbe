package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/projector/projector/internal/cli"
	"github.com/projector/projector/pkg/eventlog"
)

const topicUsage = `producer topic create|describe TOPIC: an event topic with the full-history settings.

  create TOPIC    create the topic with retention.ms=-1, retention.bytes=-1 and
                  cleanup.policy=delete (every event kept forever, never compacted),
                  and wait until every partition's leader serves it; an existing
                  topic is checked instead, and refused if it would delete history
  describe TOPIC  partitions (leader, replicas, in-sync replicas, offsets, first
                  record time), the retention and cleanup settings, and whether the
                  topic keeps its history; exit status 1 when it does not

For producers that are not Go: create the topic here, then write to it with the
settings in docs/producing.md.`

func runTopic(ctx context.Context, args []string, _ io.Reader, stdout, _ io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		cli.PrintSubcommandHelp(stdout, "topic", topicUsage, []string{"create", "describe"}, func(sub string, f *cli.Flags) {
			var o topicOptions
			o.define(sub, f)
		})
		if len(args) == 0 {
			return usageErr(errors.New("topic needs a subcommand: create or describe"))
		}
		return nil
	}
	switch args[0] {
	case "create":
		return runTopicCreate(ctx, args[1:], stdout)
	case "describe":
		return runTopicDescribe(ctx, args[1:], stdout)
	}
	return usageErr(fmt.Errorf("unknown topic subcommand %q: want create or describe", args[0]))
}

// topicName returns the one positional argument, or --topic's value.
func topicName(f *cli.Flags, fallback, cmd string) (string, error) {
	switch len(f.Args()) {
	case 0:
		if strings.TrimSpace(fallback) == "" {
			return "", fmt.Errorf("topic %s: no topic: give it as the argument or with --topic", cmd)
		}
		return fallback, nil
	case 1:
		return f.Args()[0], nil
	}
	return "", fmt.Errorf("topic %s takes one argument, the topic; got %d: %s", cmd, len(f.Args()), strings.Join(f.Args(), " "))
}

// topicOptions are the flags of topic create and topic describe.
type topicOptions struct {
	brokers, topic          string
	partitions, replication int
	asJSON                  bool
}

func (o *topicOptions) define(sub string, f *cli.Flags) {
	f.String(&o.brokers, "brokers", "KAFKA_BROKERS", BrokersDefault, "Kafka brokers, comma-separated host:port")
	f.String(&o.topic, "topic", "PROJECTOR_TOPIC", TopicDefault, "the topic, when not given as the argument")
	if sub == "create" {
		f.Int(&o.partitions, "partitions", "PROJECTOR_PARTITIONS", 0, fmt.Sprintf("partitions (0: %d for a new topic, any for an existing one)", eventlog.PartitionsDefault))
		f.Int(&o.replication, "replication-factor", "", eventlog.ReplicationFactorDefault, "replicas of each partition")
		f.Bool(&o.asJSON, "json", "", false, "write the topic's description as JSON")
	} else {
		f.Bool(&o.asJSON, "json", "", false, "write the description as JSON")
	}
}

func runTopicCreate(ctx context.Context, args []string, stdout io.Writer) error {
	var o topicOptions
	f := cli.NewFlags("topic create", `producer topic create TOPIC: create an event topic that keeps its full history
(retention.ms=-1, retention.bytes=-1, cleanup.policy=delete) and return once every
partition's leader serves it. An existing topic is checked, not changed: it is
refused if its settings would delete or compact events, or if it has another
partition count than --partitions asks for.`)
	o.define("create", f)
	if err := f.Parse(args, stdout); err != nil {
		return usageErr(err)
	}
	name, err := topicName(f, o.topic, "create")
	if err != nil {
		return usageErr(err)
	}
	bs := cli.SplitList(o.brokers)
	switch {
	case len(bs) == 0:
		return usageErr(errors.New("--brokers (KAFKA_BROKERS) is empty"))
	case o.partitions < 0:
		return usageErr(fmt.Errorf("--partitions %d: must be at least 1 (or 0 for the default)", o.partitions))
	case o.replication < 1:
		return usageErr(fmt.Errorf("--replication-factor %d: must be at least 1", o.replication))
	}
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	info, err := eventlog.EnsureTopic(tctx, bs, eventlog.TopicConfig{Name: name, Partitions: o.partitions, ReplicationFactor: o.replication})
	if err != nil {
		return kafkaErr(bs, err)
	}
	if !info.Created && o.partitions > 0 && info.Partitions != o.partitions {
		return fmt.Errorf("topic %s exists with %d partitions, not %d: it was left as it is (more partitions move keys to other partitions; the log doctor accepts history written before the change)",
			name, info.Partitions, o.partitions)
	}
	d, err := eventlog.DescribeTopic(ctx, bs, name)
	if err != nil {
		return kafkaErr(bs, err)
	}
	if o.asJSON {
		return printJSON(stdout, d)
	}
	verb := "created:"
	if !info.Created {
		verb = "exists, unchanged:"
	}
	_, _ = fmt.Fprintf(stdout, "topic %s %s %d partitions, every leader serving\n\n", name, verb, info.Partitions)
	return writeDescription(stdout, d)
}

func runTopicDescribe(ctx context.Context, args []string, stdout io.Writer) error {
	var o topicOptions
	f := cli.NewFlags("topic describe", `producer topic describe TOPIC: the topic's partitions (leader, replicas,
in-sync replicas, log start and end offsets, first record time) and its
retention and cleanup settings, and whether it keeps its full history. Exit
status 1 when it does not: a topic that deletes or compacts events cannot be the
source of truth.`)
	o.define("describe", f)
	if err := f.Parse(args, stdout); err != nil {
		return usageErr(err)
	}
	name, err := topicName(f, o.topic, "describe")
	if err != nil {
		return usageErr(err)
	}
	bs := cli.SplitList(o.brokers)
	if len(bs) == 0 {
		return usageErr(errors.New("--brokers (KAFKA_BROKERS) is empty"))
	}
	d, err := eventlog.DescribeTopic(ctx, bs, name)
	if err != nil {
		return kafkaErr(bs, err)
	}
	if o.asJSON {
		err = printJSON(stdout, d)
	} else {
		err = writeDescription(stdout, d)
	}
	if err != nil {
		return err
	}
	if !d.KeepsHistory {
		return fmt.Errorf("%w: %s has %s", eventlog.ErrHistoryAtRisk, name, strings.Join(d.Problems, ", "))
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeDescription writes a topic's description for people.
func writeDescription(w io.Writer, d eventlog.TopicDescription) error {
	var records int64
	for _, p := range d.Partitions {
		records += p.End - p.Start
	}
	history := "keeps its full history"
	if !d.KeepsHistory {
		history = "DOES NOT keep its history: " + strings.Join(d.Problems, ", ")
	}
	_, _ = fmt.Fprintf(w, "topic %s: %d partitions, %d records, %s\n", d.Name, len(d.Partitions), records, history)
	if !d.KeepsHistory {
		_, _ = fmt.Fprintf(w, "  fix (events already deleted or compacted are gone): kafka-configs.sh --bootstrap-server BROKER --alter --entity-type topics --entity-name %s --add-config retention.ms=-1,retention.bytes=-1,cleanup.policy=delete\n", d.Name)
	}
	_, _ = fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "SETTING\tVALUE\tSOURCE")
	for _, s := range d.Configs {
		src := "topic"
		if s.Default {
			src = "broker default"
		}
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, s.Value, src)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, _ = fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "PARTITION\tLEADER\tREPLICAS\tISR\tSTART\tEND\tFIRST RECORD")
	for _, p := range d.Partitions {
		leader := strconv.Itoa(p.Leader)
		if p.Leader < 0 {
			leader = "none"
		}
		first := "-"
		if !p.FirstRecord.IsZero() {
			first = p.FirstRecord.UTC().Format(time.RFC3339)
		}
		if p.Error != "" {
			first += "  (" + p.Error + ")"
		}
		_, _ = fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%s\n", p.ID, leader, ints(p.Replicas), ints(p.ISR), p.Start, p.End, first)
	}
	return tw.Flush()
}

func ints(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

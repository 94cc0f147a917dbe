package projector_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/admin"
)

// kcat writes one event in binary mode with librdkafka, as another team's service
// would; extra are librdkafka properties (-X).
func kcat(t *testing.T, topic, subject string, seq uint64, extra ...string) {
	t.Helper()
	args := []string{"-P", "-b", strings.Join(testenv.Kafka(t), ","), "-t", topic, "-k", subject,
		"-H", fmt.Sprintf("ce_id=%s-%d", subject, seq), "-H", "ce_specversion=1.0", "-H", "ce_source=kcat",
		"-H", "ce_type=Noted", "-H", "ce_subject=" + subject, "-H", fmt.Sprint("ce_sequence=", seq),
		"-H", "content-type=application/json"}
	for _, x := range extra {
		args = append(args, "-X", x)
	}
	cmd := exec.Command("kcat", args...)
	cmd.Stdin = strings.NewReader(fmt.Sprintf(`{"n":%d,"fail":false}`, seq) + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat: %v: %s", err, out)
	}
}

func needKcat(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("kcat"); err != nil {
		if os.Getenv("PROJECTOR_REQUIRE_STACK") == "1" {
			t.Fatal("kcat is not installed: scripts/stack.sh up installs it")
		}
		t.Skip("kcat is not installed")
	}
}

// Another team's service writes the same aggregates through kcat (librdkafka),
// interleaved with the Go producer. With librdkafka's default partitioner
// (consistent_random, CRC32) some events land on the wrong partition: each is
// applied or parked with a reason, none is counted as a duplicate. With
// partitioner=murmur2_random, as docs/producing.md says, the fold is exact.
func TestKcatWithTheGoProducer(t *testing.T) {
	t.Parallel()
	needKcat(t)
	for _, documented := range []bool{false, true} {
		f := newFixture(t, 6)
		var never atomic.Bool
		p := notesProjection(t, f, &never)
		var extra []string
		if documented {
			extra = []string{"partitioner=murmur2_random"}
		}
		subjects := []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"}
		const n = 4
		for seq := uint64(1); seq <= n; seq++ {
			for _, s := range subjects {
				if seq%2 == 1 {
					f.publish(note(t, s, seq, false))
				} else {
					kcat(t, f.topic, s, seq, extra...)
				}
			}
		}
		r, _ := f.start(f.config(p))
		f.waitCaughtUp(p, time.Minute)
		f.waitStatusAtEnd(r, 10*time.Second)
		got := appliedSeqs(t, f, p)
		parked, err := admin.NewDLQ(f.pool, f.schema, p.Name(), p.Version()).List(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		var dups int64
		for _, ps := range r.Status().Partitions {
			dups += ps.Duplicates
		}
		applied := 0
		for _, seqs := range got {
			applied += len(seqs)
		}
		if dups != 0 || applied+len(parked) != n*len(subjects) {
			t.Fatalf("documented=%v: %d applied, %d parked, %d duplicates: want all %d applied or parked, no duplicate",
				documented, applied, len(parked), dups, n*len(subjects))
		}
		if documented {
			for _, s := range subjects {
				if !equal(got[s], seqs(1, n)) {
					t.Fatalf("murmur2_random: %s applied %v, want 1-%d", s, got[s], n)
				}
			}
			if len(parked) != 0 {
				t.Fatalf("murmur2_random: %d parked: %+v", len(parked), parked)
			}
			continue
		}
		misrouted := 0
		for _, pk := range parked {
			switch {
			case strings.Contains(pk.Error, "misrouted") && strings.Contains(pk.Error, "partitioner=murmur2_random"):
				misrouted++
			case pk.Behind != nil:
			default:
				t.Fatalf("default partitioner: parked for %q", pk.Error)
			}
		}
		if misrouted == 0 {
			t.Fatalf("default partitioner: nothing reported misrouted (parked %+v, applied %v)", parked, got)
		}
		t.Logf("librdkafka's default partitioner: %d of %d events misrouted, %d parked in all", misrouted, n*len(subjects), len(parked))
	}
}

// Package snapshotting is what a running instance does with snapshots: it takes
// them when its Policy says (Snapshotter), and keeps its snapshot stores free of
// forgotten subjects' data, whoever wrote them (Scrubber, on forget.ScrubSnapshots).
//
// # The cut
//
// Package projector (the runtime) builds one Snapshotter and one Scrubber per
// Runner from its Config, tells them after each committed batch which event types
// it applied, and runs their loops; projector.SnapshotPolicy is an alias of
// Policy. It imports this package, never the reverse. What a snapshot is, how it
// is taken, stored, verified and restored is package snapshot; what "forgotten"
// covers and how a snapshot is rewritten without it is package forget. A change to
// when snapshots are taken or pruned, or to when the stores are scrubbed, goes here.
package snapshotting

import (
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/projector/projector/pkg/offsets"
	"github.com/projector/projector/pkg/readmodel"
	"github.com/projector/projector/pkg/shred"
)

// Source is what the snapshotter and the scrubber need of the runtime: the read
// model they snapshot or scrub, where its positions are stored, the key store that
// says who was forgotten, and the lock that lets one of them touch the stores at a
// time.
type Source struct {
	Pool       *pgxpool.Pool
	Schema     string // the framework's schema
	Projection *readmodel.Projection
	Topic      string
	Offsets    *offsets.Store
	Keys       shred.KeyStore // nil: nothing is ever forgotten here
	Log        *zap.Logger
	Mu         *sync.Mutex // one of taking, pruning and rewriting snapshots at a time
}

// Package doctor is the log doctor: it scans an event topic, or an offset or time
// range of it, and reports every record that would make a read model differ from
// the fold of the log, so that "why does my read model differ" is one command
// (producer check TOPIC). It reports:
//
//   - misrouted records: a keyed record on a partition its key does not hash to
//     (murmur2 mod the partition count, see eventlog.Layout, which also accepts
//     history written before a partition-count increase);
//   - a key that differs from the event's subject, or a record without a key whose
//     subject hashes to another partition (its aggregate is split all the same);
//   - duplicate event ids, with every offset that holds them;
//   - per aggregate (subject, within a partition, as the runtime reads it): gaps in
//     the CloudEvents sequence extension, swaps (a sequence lower than one already
//     seen that fills a gap, with a new id) and stale sequences (a sequence already
//     taken, with a new id);
//   - records that do not decode, or lack a required attribute, with the decoder's
//     own error (package events);
//   - personal fields in plaintext: a record of a type registered with
//     events.WithPersonalData whose personal fields hold values that the encryption
//     attributes do not cover.
//
// # Speed
//
// Partitions are read concurrently over kafka-go connections with the batch API.
// Attributes are read from the headers in place, without building an event or a
// map; the data is checked as the decoder checks it (valid UTF-8, no NUL, valid
// JSON, no duplicate member) but decoded only for the personal-data check of a
// type that has personal fields and a record whose encryption attributes do not
// cover them, or with Config.Deep. A record the fast path finds wrong is decoded
// again by events.Decode, whose error is the one reported; tests hold the two to
// the same verdict.
//
// # Memory
//
// Duplicates are found in two layers. Each aggregate keeps a window of its last
// WindowDefault event ids (8 bytes of hash, the offset and a fingerprint each), so a
// retried write that lands a few events late is reported with both offsets at once.
// Every id also goes into one set of 64-bit hashes shared by all partitions: an
// open-addressing table sized for the records in range at a load of at most 3/4,
// so 10 million records take 128 MiB (16 Mi slots of 8 bytes). A hit in the set that
// the window did not explain is a duplicate whose other offsets are unknown; when
// there are any, a second pass over the same range collects their offsets (it
// keeps only those ids). Per aggregate the scan also keeps the highest sequence
// and its unfilled gaps: memory grows with the aggregates in range, not with the
// records, besides the 8 to 16 bytes per record of the set. Findings are kept up
// to Config.MaxFindings per kind; their counts are always exact.
package doctor

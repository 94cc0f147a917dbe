// Package servers is the one description of the servers the project runs outside
// Docker — Apache Kafka (KRaft, combined mode), PostgreSQL, Redis and Mailpit — and
// the one way to start them, wait until they answer, and stop them by pid.
//
// Three callers start these servers, each for its own reason, and all three go
// through this package:
//
//   - scripts/stack.sh, the shared local stack every developer and `make test` uses:
//     it installs the binaries (apt, Maven Central's jars, go install), then runs
//     internal/stackctl, which starts a [Stack] under a state folder, detached.
//   - internal/testenv's private servers, for tests whose faults would disturb
//     others (a Redis flushed or killed, a PostgreSQL stopped, a Mailpit refusing).
//   - internal/chaos, the reliability suite's per-scenario servers: on a veth
//     address, with PostgreSQL on a tmpfs, killed and restarted on the same data.
//
// Each server is a plain struct — [Kafka], [Postgres], [Redis], [Mailpit] — whose
// zero fields mean their documented defaults. Its configuration (Kafka's
// properties, PostgreSQL's initdb flags and settings, Redis's and Mailpit's
// arguments) is rendered by its methods, nowhere else. What differs between the
// shared stack and a private server is exactly one field, [Lifetime]:
//
//	setting                       Shared (the stack)        Private (tests, chaos)
//	Kafka JIT                     C2 (faster once warm)     C1 only (quicker start)
//	PostgreSQL fsync, initdb      on, synced                off, --no-sync
//	PostgreSQL max_connections    200 (parallel test pkgs)  100
//	PostgreSQL WAL size           default (1 GB)            32–96 MB (fits a tmpfs)
//	Redis persistence             AOF, fsync every second   none: a kill empties it
//
// What follows from the address instead: a server bound to an address other than
// loopback (the chaos suite's veth) trusts that network in pg_hba.conf and runs
// Redis without protected mode, which would refuse its clients.
//
// A server's [Process] is started in its own process group ([StartProcess]) or,
// for the stack, in its own session so it outlives the command that started it
// ([StartDetached]). Processes are signalled by pid only, never by name.
package servers

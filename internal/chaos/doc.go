// Package chaos is the reliability suite's machinery: private servers started and
// signalled by pid (Kafka in KRaft mode, PostgreSQL, Redis, Mailpit), a supervisor for
// the processes under test, network namespaces for cuts, a history of every produce
// attempt, and the oracle that folds the log independently of the projector and
// checks the invariants. cmd/chaos runs its scenarios.
package chaos

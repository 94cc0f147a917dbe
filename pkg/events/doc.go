// Package events holds the event envelope (CloudEvents 1.0), its mapping to Kafka
// records, the type registry with upcasters, the publisher and topic setup.
//
// It is the root of the import graph: offsets, readmodel and sideeffects import it;
// it imports none of them.
package events

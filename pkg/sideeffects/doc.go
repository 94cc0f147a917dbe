// Package sideeffects declares effects apart from read-model handlers and makes them
// fire once: the Redis idempotency ledger, the durable watermark and the horizon.
//
// Not built yet: see issue 5 ("Side effects fire once").
package sideeffects

package snapshot

// Checksum is checksum, for tests that build a manifest as an older build wrote it.
var Checksum = checksum

// Package vhdgen makes VHD images for testing VHD parsers, and says what
// each must read as: a generator of valid-but-unusual images (fixed;
// dynamic with odd sizes, every legal block size, shuffled blocks,
// partial bitmaps, 511-byte footers, creator and CHS quirks;
// differencing chains with each locator kind and partly written blocks),
// a catalogue of mutations that damage them (field by field, truncation,
// lying lengths and offsets, overlapping tables), and a reference
// decoder that computes the expected view of an image (size, type,
// SHA-256 of the raw disk) or says it must be refused.
//
// The reference decoder is the oracle other parsers are judged against,
// so it shares no code with vhdkit's engine: it is written from the
// format's specification alone (docs/FUZZING.md). The generator writes
// bytes directly for the same reason: an engine bug must not hide in
// both the image and its expectation.
//
// A Case is a list of layer specifications (top first) plus an optional
// mutation; Build turns it into files, and Expect decodes them. Cases are
// small (a few MiB of disk at most) and deterministic: Generate(seed, i)
// is the same case on every machine, which is what lets a finding be
// minimised (Case.Shrink) and reproduced from its report.
package vhdgen

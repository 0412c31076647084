// Package fuzzrun is `vhd fuzz run`: differential fuzzing of VHD parsers.
// It feeds the cases vhdgen generates (and mutates) to a target — another
// program that reads VHDs, through an adapter (qemu-img, vhdiinfo,
// vhdimount, vhdkit's own vhd, or any command) — and compares what the
// target reports or reads with the reference decoder's view. What
// differs is a finding: crash (a signal, a sanitizer report, a Go
// panic), hang (the per-case timeout), mismatch (size, type or bytes),
// refused-valid or accepted-invalid. Each finding is minimised (fewer
// layers, blocks, sectors and bytes, while its signature holds),
// deduplicated by signature and written to OUT/findings/ID/ with its
// images and report.json; Repro runs one again.
//
// docs/FUZZING.md is the user's guide.
package fuzzrun

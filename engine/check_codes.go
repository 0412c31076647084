package engine

// Problem codes say what kind of problem a Problem is. They are stable:
// scripts (`vhd check --json`), Repair and tests match them, never the
// messages, which may be reworded. docs/CLI.md lists them; a test keeps
// that list and this one the same.
const (
	// Fatal, not fixable: the image cannot be used.
	CodeFooterInvalid     = "footer-invalid"      // no usable footer, at the end or (dynamic, differencing) at offset 0
	CodeHeaderInvalid     = "header-invalid"      // a dynamic header field is wrong, or the BAT it places does not fit
	CodeLocatorInvalid    = "locator-invalid"     // a parent locator points outside the file or is malformed
	CodeBATOutOfRange     = "bat-out-of-range"    // a BAT entry puts its block past the end of the data area
	CodeBATOverlap        = "bat-overlap"         // a block overlaps a structure (footer copy, header, BAT, locator) or another block
	CodeFixedTooShort     = "fixed-too-short"     // a fixed image's file is shorter than its disk
	CodeParentUUIDMissing = "parent-uuid-missing" // a differencing image without its parent's UUID
	CodeParentUnnamed     = "parent-unnamed"      // a differencing image with neither a parent name nor a locator

	// Fixable by Repair.
	CodeFooterDamaged     = "footer-damaged"       // fatal: the footer at the end is damaged; the copy at offset 0 stands in
	CodeFooterCopyDamaged = "footer-copy-damaged"  // the copy at offset 0 is damaged
	CodeFooterCopyDiffers = "footer-copy-differs"  // the copy at offset 0 differs from the footer at the end
	CodeOrphanTail        = "orphan-tail"          // space after the last block: blocks whose allocation never reached a flush
	CodeFixedGap          = "fixed-gap"            // bytes between a fixed image's data and its footer
	CodeDataUnderClearBit = "data-under-clear-bit" // a sector holds data its bitmap bit disowns: a write that never reached a flush
	CodeBatmapStale       = "batmap-stale"         // fatal: blktap's batmap marks a block full that is not, so blktap would lose writes to it
	CodeBatmapInvalid     = "batmap-invalid"       // blktap's batmap is damaged: Xen's tapdisk will not write the image

	// Warnings: departures from the format that readers tolerate.
	CodeFooterFeatures     = "footer-features"      // the reserved features bit is clear
	CodeFooterTimestamp    = "footer-timestamp"     // the timestamp is in the future
	CodeFooterGeometry     = "footer-geometry"      // the CHS geometry is larger than the disk
	CodeSavedState         = "saved-state"          // a virtual machine saved its state with this disk
	CodeHeaderDataOffset   = "header-data-offset"   // the dynamic header's data offset is not all ones
	CodeHeaderParentFields = "header-parent-fields" // a dynamic (not differencing) disk names a parent
	CodeLocatorDuplicate   = "locator-duplicate"    // two parent locators share a code
	CodeBitmapHole         = "bitmap-hole"          // an allocated block's bitmap is a hole in the file: never written there (a download or copy cut short?)

	// Warnings about the chain, not the file: reported by
	// chains.LinkProblem (vhd check), which opens the chain as every
	// command does.
	CodeParentUnresolved = "parent-unresolved" // no parent found, or one outside the allowed folders, a cycle, too deep
	CodeParentModified   = "parent-modified"   // the parent was written after the child was made
	CodeParentMismatch   = "parent-mismatch"   // the parent's size does not fit the child
	CodeMergeUnfinished  = "merge-unfinished"  // a merge out of or into the chain did not finish
)

// problemCodes lists every code, for the test that keeps docs/CLI.md
// true.
var problemCodes = []string{
	CodeFooterInvalid, CodeHeaderInvalid, CodeLocatorInvalid, CodeBATOutOfRange, CodeBATOverlap,
	CodeFixedTooShort, CodeParentUUIDMissing, CodeParentUnnamed,
	CodeFooterDamaged, CodeFooterCopyDamaged, CodeFooterCopyDiffers, CodeOrphanTail, CodeFixedGap,
	CodeDataUnderClearBit, CodeBatmapStale, CodeBatmapInvalid,
	CodeFooterFeatures, CodeFooterTimestamp, CodeFooterGeometry, CodeSavedState, CodeHeaderDataOffset,
	CodeHeaderParentFields, CodeLocatorDuplicate, CodeBitmapHole,
	CodeParentUnresolved, CodeParentModified, CodeParentMismatch, CodeMergeUnfinished,
}

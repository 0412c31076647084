package chains

// liveHook, when a test sets it, is called at named points of the live
// changes and of the merge protocol they share (live_*.go, merge.go), so
// a test can crash the process, cut the power or time the gate exactly
// there. It is nil in production, where reachPoint does nothing. Tests
// set it before the chain is used and leave it alone while it is.
var liveHook func(point string)

// reachPoint calls liveHook, if set, with the point's name.
func reachPoint(point string) {
	if h := liveHook; h != nil {
		h(point)
	}
}

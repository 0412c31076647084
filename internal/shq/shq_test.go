package shq

import (
	"os/exec"
	"testing"
)

// TestQuoteRoundTripsThroughBash: every quoted word reaches a command as
// the one argument it was, through the real shell.
func TestQuoteRoundTripsThroughBash(t *testing.T) {
	for _, s := range []string{"/tmp/a.vhd", "/tmp/moved dir/base.vhd", `it's "quoted"`, "$HOME `x` \\ y", "", "-dash", "tab\there", "émoji ✓"} {
		out, err := exec.Command("bash", "-c", "printf %s "+Quote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("Quote(%q) = %s: bash gave %q (%v)", s, Quote(s), out, err)
		}
	}
	if q := Quote("/srv/disk.vhd"); q != "/srv/disk.vhd" {
		t.Errorf("a plain path is quoted: %s", q)
	}
}

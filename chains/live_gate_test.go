package chains

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"vhdkit/engine/crashfile"
)

// TestLiveGateSyncsLittle: the pause a live change imposes is its gate,
// and a flush inside the gate syncs what is unsynced. Nothing written
// before a change's last step outside the gate may be left for the gate
// to sync: for a snapshot, a write racing it after its first flush; for
// a merge of the top, everything its copy passes wrote into the target.
// With the top and the target on simulated files, nothing of either may
// be pending when the gate is taken (the test's writes are not
// concurrent, so nothing arrives in between).
func TestLiveGateSyncsLittle(t *testing.T) {
	defer func() { liveHook = nil }()
	for _, change := range []string{"snapshot", "merge"} {
		t.Run(change, func(t *testing.T) {
			lp := &livePower{t: t, dir: t.TempDir(), cut: -1, rng: rand.New(rand.NewPCG(1, 1)), files: map[string]*crashfile.File{}}
			defer lp.seams()()
			c := lp.powerChain(false)
			defer c.Close()
			m := newPowerModel()
			if err := m.write(c, 0, 512<<10); err != nil {
				t.Fatal(err)
			}
			pending := -1
			liveHook = func(p string) {
				switch p {
				case "snapshot:installed":
					m.write(c, 2<<20, 256<<10)
				case "snapshot:gate":
					pending = lp.files[filepath.Join(lp.dir, "top.vhd")].Pending()
				case "merge:gate":
					pending = lp.files[filepath.Join(lp.dir, "base.vhd")].Pending()
				}
			}
			var err error
			if change == "snapshot" {
				err = c.Snapshot(filepath.Join(lp.dir, "new.vhd"))
			} else {
				_, err = c.Merge(context.Background(), "", nil)
			}
			liveHook = nil
			if err != nil {
				t.Fatal(err)
			}
			if pending != 0 {
				t.Fatalf("%d writes were left for the %s's gate to sync", pending, change)
			}
		})
	}
}

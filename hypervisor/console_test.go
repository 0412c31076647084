package hypervisor

import (
	"context"
	"strings"
	"testing"
	"time"
)

// slowWriter is a console reader that takes its time (a terminal over a
// slow link, a full pipe).
type slowWriter struct{ *consoleWatch }

func (s slowWriter) Write(p []byte) (int, error) {
	time.Sleep(300 * time.Millisecond)
	return s.consoleWatch.Write(p)
}

// TestConsoleDrainedBeforeReturn: the guest's last console lines, sent
// just before it powered off, reach the console's writer before Run
// returns, even when the writer is slow (they used to be cut off when
// the run ended while the writer lagged).
func TestConsoleDrainedBeforeReturn(t *testing.T) {
	t.Parallel()
	cfg, con := guestConfig(t, "echo one\nsleep 1\necho two\necho LAST-LINE\n", nil)
	cfg.Console = slowWriter{con}
	vm, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	if err := vm.Run(ctx); err != nil {
		t.Fatalf("run: %v", err)
	}
	if out := con.String(); !strings.Contains(out, "LAST-LINE") || !strings.Contains(out, "guest.sh ended") {
		t.Fatalf("the console's last lines were lost when the run returned:\n%s", out)
	}
}

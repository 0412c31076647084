package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"

	"vhdkit/fuzz/fuzzrun"
	"vhdkit/fuzz/vhdgen"
)

var fuzzCmd = &command{
	name:    "fuzz",
	args:    "generate|run|repro [flags] ...",
	summary: "test other VHD parsers with generated and damaged images",
	doc: `Differential fuzzing of VHD parsers (docs/FUZZING.md). vhdkit generates
valid-but-unusual images (fixed; dynamic with odd sizes, every block size,
shuffled blocks, partial bitmaps, 511-byte footers, creator and CHS quirks;
differencing chains with each locator kind and partly written blocks) and
damaged ones (a catalogue of field edits, truncations, lying lengths and
offsets, overlapping tables), and knows what each must read as from an
independent reference decoder.

  generate --seed N --count K DIR
      writes K cases into DIR (a folder each) and DIR/manifest.json: per
      case its files (top first), kind (valid or corrupt), the expected
      type, size and SHA-256 of the raw disk, or "refused", and the
      mutation applied.
  run --target T --time D --out DIR [--seed N] [--jobs N]
      feeds cases to the target T and compares what it reports or reads
      with the expected view. T is qemu-img (info and convert to raw),
      vhdiinfo (size and type), vhdimount (FUSE mount, the disk read
      whole; needs /dev/fuse), vhd (this program: check, info, convert)
      or a command line 'CMD ARGS {}' ({} is the image; exit status 0
      accepts it; --stdout-raw: what it prints is the raw disk). Findings:
      crash (signal, sanitizer report, panic), hang (--timeout), mismatch
      (size, type or bytes), refused-valid, accepted-invalid. Each is
      minimised, deduplicated by signature and written to
      DIR/findings/ID/ (images, report.json); a summary ends the run.
      DIR keeps the findings and where the case stream stopped, so the
      next run goes on with new cases and reports only new findings.
  repro DIR/findings/ID
      runs that finding's target on its images again: exit status 0 when
      it still shows (printed), 1 when it no longer does.`,
	setup: func(fs *pflag.FlagSet) runFunc {
		seed := fs.Uint64("seed", 1, "case stream: the same seed makes the same cases")
		count := fs.Int("count", 100, "generate: how many cases")
		target := fs.String("target", "", "run: qemu-img, vhdiinfo, vhdimount, vhd or 'CMD ARGS {}'")
		dur := fs.Duration("time", time.Minute, "run: how long to fuzz")
		maxCases := fs.Int("cases", 0, "run: stop after this many cases (0: only --time)")
		out := fs.String("out", "", "run: folder of the corpus and findings (kept between runs)")
		jobs := fs.Int("jobs", 1, "run: cases run at once")
		timeout := fs.Duration("timeout", 10*time.Second, "run: per command; longer is a hang")
		corrupt := fs.Float64("corrupt", vhdgen.DefaultOptions.Corrupt, "share of damaged cases, 0 to 1")
		stdoutRaw := fs.Bool("stdout-raw", false, "run with a command target: its output is the raw disk, compared byte for byte")
		minimise := fs.Duration("minimise-time", time.Minute, "run: the most spent minimising one finding")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) == 0 {
				return usageErr("missing generate, run or repro")
			}
			opts := vhdgen.Options{Corrupt: *corrupt}
			if *corrupt < 0 || *corrupt > 1 {
				return usageErr("--corrupt %v: want a share between 0 and 1", *corrupt)
			}
			switch args[0] {
			case "generate":
				return fuzzGenerate(e, args[1:], *seed, *count, opts)
			case "run":
				if err := wantArgs(args[1:]); err != nil {
					return err
				}
				if *target == "" || *out == "" {
					return usageErr("run needs --target and --out")
				}
				t, err := newFuzzTarget(*target, *timeout, *stdoutRaw)
				if err != nil {
					return err
				}
				return fuzzRun(ctx, e, fuzzrun.Config{Target: t, Out: *out, Seed: *seed, Jobs: *jobs, Duration: *dur,
					MaxCases: *maxCases, Options: opts, MinimiseTime: *minimise, Log: e.stderr})
			case "repro":
				if err := wantArgs(args[1:], "FINDING"); err != nil {
					return err
				}
				return fuzzRepro(ctx, e, args[1], *timeout, *stdoutRaw)
			}
			return usageErr("%q: want generate, run or repro", args[0])
		}
	},
}

func newFuzzTarget(spec string, timeout time.Duration, stdoutRaw bool) (fuzzrun.Target, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this program for the vhd target: %w", err)
	}
	return fuzzrun.NewTarget(spec, self, timeout, stdoutRaw)
}

func fuzzGenerate(e *env, args []string, seed uint64, count int, opts vhdgen.Options) error {
	if err := wantArgs(args, "DIR"); err != nil {
		return err
	}
	if count < 1 {
		return usageErr("--count %d: want at least 1", count)
	}
	entries, err := fuzzrun.Generate(args[0], seed, count, opts)
	if err != nil {
		return err
	}
	valid := 0
	for _, en := range entries {
		if en.Kind == "valid" {
			valid++
		}
	}
	fmt.Fprintf(e.stdout, "wrote %d cases (%d valid, %d corrupt) and %s/manifest.json\n", len(entries), valid, len(entries)-valid, args[0])
	return nil
}

func fuzzRun(ctx context.Context, e *env, cfg fuzzrun.Config) error {
	sum, err := fuzzrun.Run(ctx, cfg)
	if err != nil {
		return err
	}
	el := sum.Elapsed.Seconds()
	fmt.Fprintf(e.stdout, "%s: %d cases (%d valid, %d corrupt) in %.1fs, %.1f cases/s\n", cfg.Target.Name(), sum.Cases, sum.Valid, sum.Corrupt, el, float64(sum.Cases)/el)
	fmt.Fprintf(e.stdout, "%d new findings, %d repeats of known ones, %d known before this run\n", len(sum.New), sum.Repeated, sum.Known)
	for _, r := range sum.New {
		fmt.Fprintf(e.stdout, "  %s  %-16s %s\n", r.ID, r.Kind, r.Detail)
	}
	return nil
}

func fuzzRepro(ctx context.Context, e *env, dir string, timeout time.Duration, stdoutRaw bool) error {
	rep, err := fuzzrun.ReadReport(dir)
	if err != nil {
		return err
	}
	t, err := newFuzzTarget(rep.Target, timeout, stdoutRaw)
	if err != nil {
		return err
	}
	_, f, err := fuzzrun.Repro(ctx, dir, t)
	if err != nil {
		return err
	}
	if f == nil {
		fmt.Fprintf(e.stdout, "%s: no longer shows: %s reads the images as expected\n", rep.ID, rep.Target)
		return exitStatus(exitFailed)
	}
	fmt.Fprintf(e.stdout, "%s: %s: %s\n", rep.ID, f.Kind, f.Detail)
	if f.Signature != rep.Signature {
		fmt.Fprintf(e.stdout, "(a different finding from the one reported: %s)\n", rep.Signature)
	}
	return nil
}

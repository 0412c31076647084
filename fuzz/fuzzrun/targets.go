package fuzzrun

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"vhdkit/fuzz/vhdgen"
)

// NewTarget makes the adapter --target names: qemu-img, vhdiinfo,
// vhdimount, vhd (the program at vhdBin), or a command line in which {}
// stands for the image.
func NewTarget(spec, vhdBin string, timeout time.Duration, stdoutRaw bool) (Target, error) {
	if pkg, ok := peerPackages[spec]; ok {
		if _, err := exec.LookPath(spec); err != nil {
			return nil, fmt.Errorf("target %s is not installed: install Debian's %s (scripts/setup.sh does): %w", spec, pkg, err)
		}
	}
	switch spec {
	case "qemu-img":
		return &qemuImg{timeout}, nil
	case "vhdiinfo":
		return &vhdiinfo{timeout}, nil
	case "vhdimount":
		if _, err := os.Stat("/dev/fuse"); err != nil {
			return nil, fmt.Errorf("vhdimount needs FUSE, and /dev/fuse is missing: %w", err)
		}
		return &vhdimount{timeout}, nil
	case "vhd":
		return &vhdSelf{bin: vhdBin, timeout: timeout}, nil
	}
	if !strings.Contains(spec, "{}") {
		return nil, fmt.Errorf("target %q is not qemu-img, vhdiinfo, vhdimount or vhd, and has no {} for the image: write it as 'CMD ARGS {}'", spec)
	}
	if cmd := strings.Fields(spec)[0]; !strings.ContainsAny(cmd, "={}") {
		if _, err := exec.LookPath(cmd); err != nil {
			return nil, fmt.Errorf("target command %q is not found: give its path, or install it: %w", cmd, err)
		}
	}
	return &userCmd{spec: spec, timeout: timeout, stdoutRaw: stdoutRaw}, nil
}

// peerPackages are the Debian packages of the targets that are other
// programs.
var peerPackages = map[string]string{"qemu-img": "qemu-utils", "vhdiinfo": "libvhdi-utils", "vhdimount": "libvhdi-utils"}

// qemuImg reads with QEMU's vpc driver: info for the size, convert to raw
// for the bytes.
type qemuImg struct{ timeout time.Duration }

func (t *qemuImg) Name() string    { return "qemu-img" }
func (t *qemuImg) Version() string { return versionOf("qemu-img", "-V") }

func (t *qemuImg) Read(ctx context.Context, top, work string) Observation {
	o := Observation{Size: -1}
	info := []string{"qemu-img", "info", "--output=json", "-f", "vpc", top}
	r := run(ctx, t.timeout, info)
	if !o.record(info, r) {
		return o
	}
	var v struct {
		Size int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(r.stdout, &v); err != nil {
		o.Refused, o.Why = true, "qemu-img info printed no JSON: "+err.Error()
		return o
	}
	o.Size = v.Size
	raw := filepath.Join(work, "out.raw")
	conv := []string{"qemu-img", "convert", "-f", "vpc", "-O", "raw", top, raw}
	if !o.record(conv, run(ctx, t.timeout, conv)) {
		return o
	}
	o.Raw = readRaw(raw)
	return o
}

// vhdiinfo is libvhdi's information tool: the size and the type.
type vhdiinfo struct{ timeout time.Duration }

func (t *vhdiinfo) Name() string    { return "vhdiinfo" }
func (t *vhdiinfo) metadataOnly()   {}
func (t *vhdiinfo) Version() string { return versionOf("vhdiinfo", "-V") }

var (
	mediaSize = regexp.MustCompile(`Media size\s*:.*\((\d+) bytes\)`)
	diskType  = regexp.MustCompile(`Disk type\s*:\s*(\w+)`)
)

func (t *vhdiinfo) Read(ctx context.Context, top, work string) Observation {
	o := Observation{Size: -1}
	argv := []string{"vhdiinfo", top}
	r := run(ctx, t.timeout, argv)
	if !o.record(argv, r) {
		return o
	}
	if m := mediaSize.FindSubmatch(r.stdout); m != nil {
		o.Size, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	if m := diskType.FindSubmatch(r.stdout); m != nil {
		o.Type = map[string]string{"Fixed": "fixed", "Dynamic": "dynamic", "Differential": "differencing"}[string(m[1])]
	}
	return o
}

// vhdSelf is vhdkit's own vhd program: check (damage no repair fixes is
// a refusal), info (size, type), convert to raw (the bytes).
type vhdSelf struct {
	bin     string
	timeout time.Duration
}

func (t *vhdSelf) Name() string    { return "vhd" }
func (t *vhdSelf) Version() string { return versionOf(t.bin, "version") }

func (t *vhdSelf) Read(ctx context.Context, top, work string) Observation {
	o := Observation{Size: -1}
	check := []string{t.bin, "check", "--json", top}
	r := run(ctx, t.timeout, check)
	if r.exit == 3 { // problems found: judged below
		r.exit = 0
	}
	if !o.record(check, r) {
		return o
	}
	var rep struct {
		Problems []struct {
			Code           string
			Fatal, Fixable bool
			Message        string
		}
	}
	if err := json.Unmarshal(r.stdout, &rep); err != nil {
		o.Refused, o.Why = true, "vhd check printed no JSON: "+err.Error()
		return o
	}
	for _, p := range rep.Problems {
		if p.Fatal && !p.Fixable {
			o.Refused, o.Why = true, "vhd check: "+p.Code+": "+p.Message
			return o
		}
	}
	info := []string{t.bin, "info", "--json", top}
	r = run(ctx, t.timeout, info)
	if !o.record(info, r) {
		return o
	}
	var v struct {
		Type string `json:"type"`
		Size int64  `json:"virtual_size"`
	}
	if err := json.Unmarshal(r.stdout, &v); err != nil {
		o.Refused, o.Why = true, "vhd info printed no JSON: "+err.Error()
		return o
	}
	o.Size, o.Type = v.Size, v.Type
	raw := filepath.Join(work, "out.raw")
	conv := []string{t.bin, "convert", "--from", "vhd", "--to", "raw", "--no-progress", "--force", top, raw}
	if !o.record(conv, run(ctx, t.timeout, conv)) {
		return o
	}
	o.Raw = readRaw(raw)
	return o
}

// userCmd is any command, run by sh with {} replaced by the image's
// quoted path: exit status 0 accepts the image, another refuses it, 129
// to 159 (a shell's report of a child killed by signal 1 to 31) or a
// signal is a crash; with stdoutRaw, what it prints is the raw disk.
type userCmd struct {
	spec      string
	timeout   time.Duration
	stdoutRaw bool
}

func (t *userCmd) Name() string    { return t.spec }
func (t *userCmd) Version() string { return "" }

func (t *userCmd) Read(ctx context.Context, top, work string) Observation {
	o := Observation{Size: -1}
	argv := []string{"sh", "-c", strings.ReplaceAll(t.spec, "{}", shellQuote(top))}
	r := run(ctx, t.timeout, argv)
	if r.crash == "" && r.exit > 128 && r.exit < 160 {
		r.crash = fmt.Sprintf("killed by signal %s", syscall.Signal(r.exit-128))
	}
	if !o.record(argv, r) {
		return o
	}
	if t.stdoutRaw {
		o.Raw = r.stdout
	}
	return o
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// expect applies QEMU 7.2's sizing (block/vpc.c): the CHS product unless
// the creator is one QEMU knows to use the current size ("win ", "qem2",
// "d2v ", "CTXS", "tap\0") or the geometry is the CHS maximum. It is
// deliberate and documented, so not a finding; the bytes expected are
// the reference's, cut or padded with zeros to that size.
func (t *qemuImg) expect(b *vhdgen.Built) (int64, []byte) {
	l := b.Case.Layers[0]
	size := b.View.Size
	g := l.Geometry
	chs := g.Bytes()
	switch l.Creator {
	case "win ", "qem2", "d2v ", "CTXS", "tap\x00":
	default:
		if chs != 65535*16*255*vhdgen.SectorSize {
			size = chs
		}
	}
	switch {
	case size == b.View.Size:
		return size, b.View.Raw
	case size > vhdgen.MaxReferenceDisk:
		return size, nil // the size alone is compared
	}
	raw := make([]byte, size)
	copy(raw, b.View.Raw)
	return size, raw
}

// readRaw reads and removes a target's raw output; nil if it is larger
// than any expected disk (a size mismatch says enough then).
func readRaw(path string) []byte {
	defer os.Remove(path)
	if st, err := os.Stat(path); err != nil || st.Size() > vhdgen.MaxReferenceDisk {
		return nil
	}
	b, _ := os.ReadFile(path)
	return b
}

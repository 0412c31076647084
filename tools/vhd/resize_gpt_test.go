package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gptCase is a GPT disk for --to-minimum: made on a raw file of size
// bytes by sgdisk (args) or sfdisk (script).
type gptCase struct {
	name   string
	size   int64
	sgdisk []string
	sfdisk string
	// minimal says the disk is at its minimum already: nothing changes.
	minimal bool
}

var gptCases = []gptCase{
	{name: "two", size: 64 << 20, sgdisk: []string{"-n1:2048:+8M", "-n2:0:+16M"}},
	// Array order is not disk order, the last partition is entry 200 of
	// 256 (past the 128 entries ReadTable shows), and first-lba is 2048.
	{name: "unordered256", size: 32 << 20, sfdisk: "label: gpt\ntable-length: 256\n" +
		"x1 : start=20480, size=8192, type=linux\nx2 : start=2048, size=8192, type=linux\n" +
		"x200 : start=40960, size=4096, type=linux\nx3 : start=12288, size=2048, type=linux\n"},
	// The partition runs to the last usable sector: nothing to shrink.
	{name: "full", size: 16 << 20, sgdisk: []string{"-n1:2048:0"}, minimal: true},
	// It ends 10 sectors short of it: the backup table would move onto
	// itself, for 5 KiB.
	{name: "almost", size: 16 << 20, sfdisk: "label: gpt\nstart=2048, size=30677, type=linux\n", minimal: true},
}

// makeGPTRaw makes c's raw disk in dir and fills every partition with
// random bytes, the last sectors of each included.
func makeGPTRaw(t *testing.T, dir string, c gptCase) string {
	t.Helper()
	raw := filepath.Join(dir, c.name+".raw")
	if err := os.WriteFile(raw, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, c.size); err != nil {
		t.Fatal(err)
	}
	if c.sfdisk != "" {
		sfdisk(t, raw, c.sfdisk)
	} else {
		peer(t, "sgdisk", append(c.sgdisk, raw)...)
	}
	f, err := os.OpenFile(raw, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(uint64(c.size), 3))
	for _, p := range gptPartitions(t, raw) {
		b := make([]byte, p.Size)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(b, p.Start); err != nil {
			t.Fatal(err)
		}
	}
	return raw
}

// gptPart is a partition as sfdisk --json lists it, in bytes.
type gptPart struct {
	Node        string
	Start, Size int64
}

// gptPartitions reads raw's table with sfdisk, which sees every entry
// (ReadTable shows only the first 128).
func gptPartitions(t *testing.T, raw string) []gptPart {
	t.Helper()
	var v struct {
		PartitionTable struct {
			Label      string
			Partitions []gptPart
		}
	}
	if err := json.Unmarshal([]byte(peer(t, "sfdisk", "--json", raw)), &v); err != nil || v.PartitionTable.Label != "gpt" {
		t.Fatalf("sfdisk --json %s: %+v, %v", raw, v, err)
	}
	ps := v.PartitionTable.Partitions
	for i := range ps {
		ps[i].Start *= 512
		ps[i].Size *= 512
	}
	return ps
}

// peer runs a partitioning tool and returns its output.
func peer(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// sfdiskParts is sfdisk --dump's table less what a resize changes (the
// device name, last-lba), the partition lines with their names cut.
func sfdiskParts(t *testing.T, raw string) string {
	t.Helper()
	var keep []string
	for _, l := range strings.Split(peer(t, "sfdisk", "--dump", raw), "\n") {
		if strings.HasPrefix(l, "device:") || strings.HasPrefix(l, "last-lba:") {
			continue
		}
		l = strings.TrimPrefix(l, raw) // partition lines: the number stays
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

// verifyGPTRaw runs sgdisk -v and sfdisk --verify on raw: no problem,
// no warning about the protective MBR.
func verifyGPTRaw(t *testing.T, raw string) {
	t.Helper()
	if out := peer(t, "sgdisk", "-v", raw); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v %s:\n%s", raw, out)
	}
	if out := peer(t, "sfdisk", "--verify", raw); !strings.Contains(out, "No errors detected") || strings.Contains(out, "mismatch") {
		t.Errorf("sfdisk --verify %s:\n%s", raw, out)
	}
}

// TestResizeToMinimumGPT: --to-minimum shrinks a GPT disk, dynamic and
// fixed, to its last partition plus the backup table, which moves
// there: vhd check is clean, sgdisk and sfdisk find nothing wrong and
// the same partitions, every partition's bytes are kept, and QEMU sees
// the new size. A disk at its minimum is left alone. Before this,
// --to-minimum refused every GPT disk.
func TestResizeToMinimumGPT(t *testing.T) {
	for _, c := range gptCases {
		for _, typ := range []string{"dynamic", "fixed"} {
			t.Run(c.name+"-"+typ, func(t *testing.T) {
				dir := t.TempDir()
				raw := makeGPTRaw(t, dir, c)
				img := filepath.Join(dir, "d.vhd")
				vhdOK(t, "convert", "--to", typ, raw, img)
				before, _ := os.ReadFile(img)
				r := vhdOK(t, "resize", "--to-minimum", img)
				checkOK(t, img)
				if c.minimal {
					if after, _ := os.ReadFile(img); !strings.Contains(r.stdout, "already at its minimum") || !bytes.Equal(after, before) {
						t.Fatalf("a disk at its minimum changed, or was not said to be:\n%s", r)
					}
					return
				}
				parts := gptPartitions(t, raw)
				var end int64
				for _, p := range parts {
					end = max(end, p.Start+p.Size)
				}
				want := end + gptArrayBytes(t, raw) + 512
				if got := qemuVirtualSize(t, img, "vpc"); got != want {
					t.Fatalf("qemu-img sees %d bytes, want %d\n%s", got, want, r)
				}
				out := filepath.Join(dir, "out.raw")
				vhdOK(t, "convert", "--to", "raw", img, out)
				verifyGPTRaw(t, out)
				if a, b := sfdiskParts(t, raw), sfdiskParts(t, out); a != b {
					t.Errorf("sfdisk --dump before:\n%s\nafter:\n%s", a, b)
				}
				comparePartitions(t, raw, out, parts)
				vhdOK(t, "resize", "--to-minimum", img) // again: already minimal
				checkOK(t, img)
			})
		}
	}
}

// gptArrayBytes is the size of raw's entry array in whole sectors.
func gptArrayBytes(t *testing.T, raw string) int64 {
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	n := int64(binary.LittleEndian.Uint32(b[512+80:])) * int64(binary.LittleEndian.Uint32(b[512+84:]))
	return (n + 511) / 512 * 512
}

func comparePartitions(t *testing.T, a, b string, parts []gptPart) {
	t.Helper()
	x, _ := os.ReadFile(a)
	y, _ := os.ReadFile(b)
	for _, p := range parts {
		end := p.Start + p.Size
		if int64(len(y)) < end || !bytes.Equal(x[p.Start:end], y[p.Start:end]) {
			t.Errorf("partition %s's bytes changed", p.Node)
		}
	}
}

// TestResizeToMinimumGPTRefused: a GPT disk whose table is damaged, whose
// copies disagree, whose entry reaches past the disk, with data past its
// last partition, or with a child, is refused in one line, and not a
// byte of the image changes.
func TestResizeToMinimumGPTRefused(t *testing.T) {
	cases := []struct {
		name, want string
		mess       func(b []byte)
	}{
		{"primary header CRC", "damaged", func(b []byte) { b[512+60] ^= 1 }},
		{"primary array CRC", "damaged", func(b []byte) { b[2*512+56] ^= 1 }},
		{"backup differs", "disagree", func(b []byte) {
			last := len(b)/512 - 1
			b[(last-32)*512+56] ^= 1 // the backup's first entry's name
			fixGPTCRCs(b, last)
		}},
		{"entry past the disk", "damaged", func(b []byte) {
			for _, hdr := range []int{1, len(b)/512 - 1} {
				arr := int(binary.LittleEndian.Uint64(b[hdr*512+72:]))
				binary.LittleEndian.PutUint64(b[arr*512+128+40:], uint64(len(b)/512+5))
				fixGPTCRCs(b, hdr)
			}
		}},
		{"data past the last partition", "not zero", func(b []byte) { copy(b[50<<20:], "stray") }},
		{"data where the backup goes", "not zero", func(b []byte) { b[(2048+16384+32768)*512+600] = 1 }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			raw := makeGPTRaw(t, dir, gptCases[0])
			b, _ := os.ReadFile(raw)
			c.mess(b)
			os.WriteFile(raw, b, 0o644)
			img := filepath.Join(dir, "d.vhd")
			vhdOK(t, "convert", "--to", "dynamic", raw, img)
			refusedUnchanged(t, img, c.want)
		})
	}
	t.Run("child", func(t *testing.T) {
		dir := t.TempDir()
		img := filepath.Join(dir, "d.vhd")
		vhdOK(t, "convert", "--to", "dynamic", makeGPTRaw(t, dir, gptCases[0]), img)
		vhdOK(t, "snapshot", img, filepath.Join(dir, "child.vhd"))
		refusedUnchanged(t, img, "--force")
		checkOK(t, filepath.Join(dir, "child.vhd"))
	})
}

// refusedUnchanged runs --to-minimum on img, which must fail with one
// line of error holding want and leave every byte of img as it was.
func refusedUnchanged(t *testing.T, img, want string) {
	t.Helper()
	before, _ := os.ReadFile(img)
	r := vhdCode(t, exitFailed, "resize", "--to-minimum", img)
	if msg := strings.TrimSpace(r.stderr); !strings.Contains(msg, want) || strings.Contains(msg, "\n") {
		t.Errorf("want one line with %q:\n%s", want, r)
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(after, before) {
		t.Error("a refused --to-minimum changed the image")
	}
	checkOK(t, img)
}

// fixGPTCRCs recomputes the entry array CRC and the header CRC of the
// GPT header at sector hdr of disk b.
func fixGPTCRCs(b []byte, hdr int) {
	h := b[hdr*512 : hdr*512+512]
	arr := int(binary.LittleEndian.Uint64(h[72:]))
	n := int(binary.LittleEndian.Uint32(h[80:]) * binary.LittleEndian.Uint32(h[84:]))
	binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(b[arr*512:arr*512+n]))
	hs := binary.LittleEndian.Uint32(h[12:])
	binary.LittleEndian.PutUint32(h[16:], 0)
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:hs]))
}

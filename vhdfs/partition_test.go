package vhdfs

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// sfdiskImage writes a disk of size bytes partitioned by sfdisk (util-linux,
// the peer every table here is checked against) from script.
func sfdiskImage(t testing.TB, size int64, script string) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.Truncate(path, 0); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	cmd := exec.Command("sfdisk", "-q", "--no-reread", "--no-tell-kernel", path)
	cmd.Stdin = strings.NewReader(strings.ReplaceAll(script, "DEV", path))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sfdiskParts is what sfdisk --json says the partitions of img are
// (extended containers left out), as Partitions.
func sfdiskParts(t testing.TB, img []byte) []Partition {
	t.Helper()
	path := filepath.Join(t.TempDir(), "check.raw")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sfdisk", "--json", path).Output()
	if err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	var v struct {
		PT struct {
			Partitions []struct {
				Node        string
				Start, Size int64
				Type, Name  string
			}
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	var list []Partition
	for _, p := range v.PT.Partitions {
		if p.Type == "5" || p.Type == "f" || p.Type == "85" {
			continue
		}
		n, _ := strconv.Atoi(strings.TrimPrefix(p.Node, path))
		list = append(list, Partition{Number: n, Start: p.Start * 512, Len: p.Size * 512, Name: p.Name})
	}
	return list
}

const (
	mbrScript = "label: dos\nunit: sectors\nDEV1 : start=4, size=60, type=83\nDEV2 : start=64, size=400, type=5\nDEV5 : start=66, size=100, type=83\nDEV6 : start=168, size=100, type=7\nDEV7 : start=270, size=50, type=c\n"
	gptScript = "label: gpt\nunit: sectors\nfirst-lba: 34\nstart=34, size=100, name=alpha\nstart=134, size=200, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"
)

func sameParts(t *testing.T, got *Table, want []Partition) {
	t.Helper()
	if len(got.Partitions) != len(want) {
		t.Fatalf("got %d partitions %+v, sfdisk says %+v", len(got.Partitions), got.Partitions, want)
	}
	for i, w := range want {
		g := got.Partitions[i]
		if g.Number != w.Number || g.Start != w.Start || g.Len != w.Len || g.Name != w.Name {
			t.Errorf("partition %d: got %+v, sfdisk says %+v", i, g, w)
		}
	}
}

func TestReadTableAgreesWithSfdisk(t *testing.T) {
	for _, tc := range []struct{ name, kind, script string }{
		{"mbr-logical", "mbr", mbrScript},
		{"gpt", "gpt", gptScript},
		{"mbr-simple", "mbr", "label: dos\n,1M,83\n,2M,7\n"},
		{"gpt-many", "gpt", strings.Repeat(",1M\n", 20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size := int64(256 << 10)
			if strings.Contains(tc.script, "M") {
				size = 32 << 20
			}
			script := tc.script
			if tc.name == "gpt-many" {
				script = "label: gpt\n" + script
			}
			img := sfdiskImage(t, size, script)
			tab, err := ReadTable(bytes.NewReader(img), size)
			if err != nil {
				t.Fatal(err)
			}
			if tab.Kind != tc.kind || len(tab.Problems) > 0 {
				t.Fatalf("kind %q problems %q", tab.Kind, tab.Problems)
			}
			sameParts(t, tab, sfdiskParts(t, img))
		})
	}
}

// TestReadTableDamaged makes damaged tables from good ones and checks
// each is read as far as it can be, never past the disk or round a loop.
func TestReadTableDamaged(t *testing.T) {
	mbr := sfdiskImage(t, 256<<10, mbrScript)
	gpt := sfdiskImage(t, 256<<10, gptScript)
	const size = 256 << 10
	put32 := func(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }
	for _, tc := range []struct {
		name    string
		base    []byte
		mess    func(b []byte)
		kind    string
		numbers []int
	}{
		{"no signature", mbr, func(b []byte) { b[510] = 0 }, "", nil},
		{"primary beyond disk", mbr, func(b []byte) { put32(b, 446+8, 1<<30) }, "mbr", []int{5, 6, 7}},
		{"primary overflowing", mbr, func(b []byte) { put32(b, 446+12, 0xFFFFFFFF) }, "mbr", []int{5, 6, 7}},
		{"EBR loop to itself", mbr, func(b []byte) {
			// The second EBR (sector 64+102=166) links back to the first.
			put32(b, 166*512+446+16+8, 0)
			b[166*512+446+16+4] = 5
			put32(b, 166*512+446+16+8, 0)
			put32(b, 64*512+446+16+8, 0) // first EBR links to itself
		}, "mbr", []int{1, 5}},
		{"EBR link outside", mbr, func(b []byte) { put32(b, 64*512+446+16+8, 5000) }, "mbr", []int{1, 5}},
		{"logical outside extended", mbr, func(b []byte) { put32(b, 64*512+446+12, 1000) }, "mbr", []int{1, 6, 7}},
		{"GPT primary header CRC", gpt, func(b []byte) { b[512+16]++ }, "gpt", []int{1, 2}},
		{"GPT both headers bad", gpt, func(b []byte) { b[512+16]++; b[size-512+16]++ }, "", nil},
		{"GPT entries CRC", gpt, func(b []byte) { b[1024+40]++ }, "gpt", []int{1, 2}}, // backup array intact
		{"GPT huge entry count", gpt, func(b []byte) {
			for _, h := range []int{512, size - 512} {
				put32(b, h+80, 1<<20)
				put32(b, h+16, 0)
				put32(b, h+16, crc32.ChecksumIEEE(b[h:h+92]))
			}
		}, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(tc.base)
			tc.mess(b)
			tab, err := ReadTable(bytes.NewReader(b), size)
			if err != nil {
				t.Fatal(err)
			}
			var nums []int
			for _, p := range tab.Partitions {
				nums = append(nums, p.Number)
				if p.Start < 0 || p.Len <= 0 || p.Start+p.Len > size {
					t.Errorf("partition %+v outside the disk", p)
				}
			}
			if tab.Kind != tc.kind || !equalInts(nums, tc.numbers) {
				t.Errorf("got %q %v (problems %q), want %q %v", tab.Kind, nums, tab.Problems, tc.kind, tc.numbers)
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// protectiveMBR is a sector 0 holding one protective (0xEE) entry over
// sectors 1+count: a GPT disk's MBR.
func protectiveMBR(count uint32) []byte {
	b := make([]byte, sectorSize)
	b[446+4] = 0xEE
	binary.LittleEndian.PutUint32(b[446+8:], 1)
	binary.LittleEndian.PutUint32(b[446+12:], count)
	b[510], b[511] = 0x55, 0xAA
	return b
}

// TestReadTableSmallDisks: a GPT disk too small for the sectors its
// table names (here: one sector, a protective MBR and nothing else) has
// no readable table, which is a problem to report, not a failure to read
// the disk. The reader holds exactly the disk, so any read past its end
// fails, as a real disk's does.
func TestReadTableSmallDisks(t *testing.T) {
	gpt := sfdiskImage(t, 256<<10, gptScript)
	for _, tc := range []struct {
		name string
		disk []byte
	}{
		{"one sector, protective MBR", protectiveMBR(0xFFFFFFFF)},
		{"one and a half sectors", append(protectiveMBR(1), make([]byte, 200)...)},
		{"GPT cut after its header", gpt[:2*sectorSize]},
		{"GPT cut inside its entries", gpt[:10*sectorSize]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := ReadTable(bytes.NewReader(tc.disk), int64(len(tc.disk)))
			if err != nil {
				t.Fatalf("ReadTable: %v", err)
			}
			if tab.Kind != "" || len(tab.Partitions) != 0 || len(tab.Problems) == 0 {
				t.Fatalf("got %+v, want no table and the problems listed", tab)
			}
			for _, p := range tab.Problems {
				if !strings.Contains(p, "GPT header at sector") {
					t.Errorf("problem %q does not say which header", p)
				}
			}
		})
	}
}

// FuzzReadTable feeds arbitrary disks to the table reader: it must not
// panic, loop, read past the disk's end or return a partition outside
// the disk. The disk is exactly the input (any size, not only whole
// sectors), so a read past its end fails as on a real disk.
func FuzzReadTable(f *testing.F) {
	if _, err := exec.LookPath("sfdisk"); err == nil {
		f.Add(sfdiskImage(f, 256<<10, mbrScript))
		f.Add(sfdiskImage(f, 256<<10, gptScript))
	}
	f.Add(make([]byte, 1024))
	f.Add(protectiveMBR(1))
	f.Fuzz(func(t *testing.T, disk []byte) {
		size := int64(len(disk))
		tab, err := ReadTable(bytes.NewReader(disk), size)
		if err != nil {
			t.Fatal(err) // reads inside a byte slice cannot fail
		}
		if len(tab.Partitions) > maxGPTEntries+4+maxLogical {
			t.Fatalf("%d partitions", len(tab.Partitions))
		}
		for _, p := range tab.Partitions {
			if p.Start < 0 || p.Len <= 0 || p.Start > size || p.Len > size-p.Start {
				t.Fatalf("partition %+v outside a disk of %d bytes", p, size)
			}
		}
		if _, err := json.Marshal(tab); err != nil {
			t.Fatal(err)
		}
	})
}

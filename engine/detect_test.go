package engine

import (
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vhdkit/engine/crashfile"
)

// at returns a head of n zero bytes with magic written at off.
func at(n, off int, magic string) []byte {
	b := make([]byte, n)
	copy(b[off:], magic)
	return b
}

// with writes more magic into b at off and returns b.
func with(b []byte, off int, magic string) []byte {
	copy(b[off:], magic)
	return b
}

func TestDetect(t *testing.T) {
	zeros := make([]byte, FooterSize)
	footer := at(FooterSize, 0, footerCookie)
	footer511 := at(FooterSize, 1, footerCookie)
	qcow2 := at(4096, 0, "QFI\xfb\x00\x00\x00\x03")
	for _, c := range []struct {
		name       string
		head, tail []byte
		kind       ContentKind
		format     string
	}{
		{"empty file", nil, nil, ContentUnknown, ""},
		{"zeros", make([]byte, 4096), zeros, ContentUnknown, ""},
		{"VHD footer at the end", make([]byte, 4096), footer, ContentVHD, "vhd"},
		{"511-byte footer at the end", make([]byte, 4096), footer511, ContentVHD, "vhd"},
		{"footer copy at 0 only", at(4096, 0, footerCookie), zeros, ContentVHD, "vhd"},
		{"dynamic header at 512 only", at(4096, 512, headerCookie), zeros, ContentVHD, "vhd"},
		// A VHD cut short, as check calls it, not a raw disk to copy.
		{"a 8-byte file saying conectix", []byte(footerCookie), nil, ContentVHD, "vhd"},
		{"a 400-byte file starting conectix", at(400, 0, footerCookie), nil, ContentVHD, "vhd"},
		// A fixed VHD's data comes first: a disk that begins with a qcow2
		// image, an MBR or a gzip stream is still a VHD.
		{"fixed VHD holding a qcow2", qcow2, footer, ContentVHD, "vhd"},
		{"fixed VHD holding a gzip stream", at(4096, 0, "\x1f\x8b\x08"), footer, ContentVHD, "vhd"},
		{"fixed VHD holding an MBR disk", at(4096, 510, "\x55\xaa"), footer, ContentVHD, "vhd"},
		// The other formats' magic at 0 is stronger than a header cookie
		// at 512, which is stronger than a boot signature.
		{"qcow2 with cxsparse at 512", with(at(4096, 0, "QFI\xfb\x00\x00\x00\x02"), 512, headerCookie), zeros, ContentImage, "qcow2"},
		{"header at 512 and a boot signature", with(at(4096, 510, "\x55\xaa"), 512, headerCookie), zeros, ContentVHD, "vhd"},
		{"qcow2 v3", qcow2, zeros, ContentImage, "qcow2"},
		{"qcow2 v2", at(4096, 0, "QFI\xfb\x00\x00\x00\x02"), zeros, ContentImage, "qcow2"},
		{"qcow v1", at(4096, 0, "QFI\xfb\x00\x00\x00\x01"), zeros, ContentImage, "qcow"},
		{"qcow magic alone (4-byte file)", []byte("QFI\xfb"), nil, ContentImage, "qcow2"},
		{"QED", at(4096, 0, "QED\x00"), zeros, ContentImage, "qed"},
		{"VHDX", at(4096, 0, "vhdxfile"), zeros, ContentImage, "vhdx"},
		{"VMDK sparse", at(4096, 0, "KDMV"), zeros, ContentImage, "vmdk"},
		{"VMDK ESX COWD", at(4096, 0, "COWD"), zeros, ContentImage, "vmdk"},
		{"VMDK descriptor, shorter than a sector", []byte("# Disk DescriptorFile\nversion=1\n"), nil, ContentImage, "vmdk"},
		{"VDI", with(at(4096, 0, "<<< Oracle VM VirtualBox Disk Image >>>\n"), 0x40, "\x7f\x10\xda\xbe"), zeros, ContentImage, "vdi"},
		{"VDI signature without the banner", at(4096, 0x40, "\x7f\x10\xda\xbe"), zeros, ContentUnknown, ""},
		{"VDI banner without the signature", at(4096, 0, "<<< Oracle VM VirtualBox Disk Image >>>\n"), zeros, ContentUnknown, ""},
		{"Parallels", at(4096, 0, "WithoutFreeSpace"), zeros, ContentImage, "parallels"},
		{"Parallels ext", at(4096, 0, "WithouFreSpacExt"), zeros, ContentImage, "parallels"},
		{"gzip", at(4096, 0, "\x1f\x8b\x08"), zeros, ContentPacked, "gzip"},
		{"gzip magic with another method", at(4096, 0, "\x1f\x8b\x07"), zeros, ContentUnknown, ""},
		{"xz", at(4096, 0, "\xfd7zXZ\x00"), zeros, ContentPacked, "xz"},
		{"zstd", at(4096, 0, "\x28\xb5\x2f\xfd"), zeros, ContentPacked, "zstd"},
		{"bzip2", at(4096, 0, "BZh91AY&SY"), zeros, ContentPacked, "bzip2"},
		{"bzip2, empty stream", at(4096, 0, "BZh9\x17\x72\x45\x38\x50\x90"), zeros, ContentPacked, "bzip2"},
		{"BZh without a block magic", at(4096, 0, "BZh9 hello"), zeros, ContentUnknown, ""},
		{"zip", at(4096, 0, "PK\x03\x04"), zeros, ContentPacked, "zip"},
		{"7-Zip", at(4096, 0, "7z\xbc\xaf\x27\x1c"), zeros, ContentPacked, "7z"},
		{"tar", at(4096, 257, "ustar\x0000"), zeros, ContentPacked, "tar"},
		{"LUKS", at(4096, 0, "LUKS\xba\xbe"), zeros, ContentRawData, "luks"},
		{"ISO 9660", at(DetectHeadSize, 0x8001, "CD001"), zeros, ContentRawData, "iso9660"},
		{"ISO 9660 cut short", at(0x8004, 0x8001, "CD0"), zeros, ContentUnknown, ""},
		{"GPT", with(at(4096, 510, "\x55\xaa"), 512, "EFI PART"), zeros, ContentRawData, "gpt"},
		{"GPT, 4 KiB sectors", with(at(8192, 510, "\x55\xaa"), 4096, "EFI PART"), zeros, ContentRawData, "gpt"},
		{"MBR", at(4096, 510, "\x55\xaa"), zeros, ContentRawData, "mbr"},
		{"tail of the wrong length is ignored", make([]byte, 4096), footer[:100], ContentUnknown, ""},
	} {
		got := Detect(c.head, c.tail)
		if got.Kind != c.kind || got.Format != c.format {
			t.Errorf("%s: Detect = %+v, want kind %d format %q", c.name, got, c.kind, c.format)
		}
		if (got.What == "") != (got.Kind == ContentUnknown) {
			t.Errorf("%s: What %q for kind %d", c.name, got.What, got.Kind)
		}
	}
}

// TestNotVHDErrors: a file that holds another format is refused by Open,
// Check and Repair with a *FormatError that names it (and is not
// ErrCorrupt, which would send the user to repair), and Repair leaves
// its bytes alone. OpenAny refuses it too, unless it is raw data.
func TestNotVHDErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name  string
		data  []byte
		what  string
		asRaw bool // OpenAny reads it as a raw disk
	}{
		{"disk.qcow2", at(1<<20, 0, "QFI\xfb\x00\x00\x00\x03"), "qcow2 image", false},
		{"disk.vmdk", []byte("# Disk DescriptorFile\nversion=1\n"), "VMDK descriptor", false},
		{"disk.img.xz", at(1<<20, 0, "\xfd7zXZ\x00"), "xz-compressed", false},
		{"disk.img", at(1<<20, 510, "\x55\xaa"), "raw disk image (MBR", true},
	} {
		path := filepath.Join(dir, c.name)
		if err := os.WriteFile(path, c.data, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(c.data)
		_, errOpen := Open(path, Options{})
		_, errCheck := CheckPath(path, CheckOptions{Bitmaps: true})
		_, errRepair := Repair(path, RepairOptions{Bitmaps: true})
		for op, err := range map[string]error{"Open": errOpen, "CheckPath": errCheck, "Repair": errRepair} {
			var fe *FormatError
			if !errors.As(err, &fe) || !errors.Is(err, ErrOtherFormat) || errors.Is(err, ErrCorrupt) {
				t.Errorf("%s %s: %v, want a *FormatError that is not ErrCorrupt", op, c.name, err)
				continue
			}
			if msg := err.Error(); !strings.Contains(msg, c.what) || !strings.Contains(msg, "not a VHD") || strings.Contains(msg, "repair") || strings.Contains(msg, "\n") {
				t.Errorf("%s %s: message %q", op, c.name, msg)
			}
		}
		if b, _ := os.ReadFile(path); sha256.Sum256(b) != sum {
			t.Errorf("Repair %s changed the file", c.name)
		}
		d, err := OpenAny(path, Options{ReadOnly: true})
		if c.asRaw {
			if err != nil {
				t.Errorf("OpenAny %s: %v, want a raw disk", c.name, err)
			} else {
				d.Close()
			}
			continue
		}
		if !errors.Is(err, ErrOtherFormat) || !strings.Contains(err.Error(), "--from raw") {
			t.Errorf("OpenAny %s: %v, want a FormatError naming --from raw", c.name, err)
		}
		if err == nil {
			d.Close()
		}
	}
}

// TestCheckNamesNoFile: Check on a File with no name still explains.
func TestCheckNamesNoFile(t *testing.T) {
	f := crashfile.New()
	if _, err := f.WriteAt(at(1<<16, 0, "vhdxfile"), 0); err != nil {
		t.Fatal(err)
	}
	_, err := Check(f, CheckOptions{})
	if !errors.Is(err, ErrOtherFormat) || !strings.HasPrefix(err.Error(), "a VHDX image, not a VHD; convert it with qemu-img convert") {
		t.Fatalf("Check of an unnamed VHDX: %v", err)
	}
}

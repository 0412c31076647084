package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// What a file holds, told by the signatures other formats put at fixed
// places. Only a positive signature names a format: a file with none is
// ContentUnknown (a raw disk, or a VHD damaged past recognition).
//
//	where                  bytes                      format
//	last 512 (or 511)      "conectix"                 VHD footer (wins over all)
//	0                      "conectix"                 VHD footer copy (dynamic)
//	512                    "cxsparse"                 VHD dynamic header
//	0                      "QFI\xfb" + version (BE)   qcow (1), qcow2 (2, 3)
//	0                      "QED\x00"                  QED
//	0                      "vhdxfile"                 VHDX
//	0                      "KDMV" / "COWD"            VMDK sparse extent
//	0                      "# Disk DescriptorFile"    VMDK descriptor (text)
//	0, 0x40                "<<< ", 0xbeda107f (LE)    VDI
//	0                      "WithoutFreeSpace" /
//	                       "WithouFreSpacExt"         Parallels
//	0                      1f 8b 08 / fd "7zXZ" 00 /
//	                       28 b5 2f fd / "BZh" /
//	                       "PK\x03\x04" / "7z\xbc\xaf"  gzip, xz, zstd, bzip2, zip, 7-Zip
//	257                    "ustar"                    tar (an OVA is one)
//	0                      "LUKS\xba\xbe"             LUKS volume   (raw data)
//	0x8001                 "CD001"                    ISO 9660      (raw data)
//	512 or 4096            "EFI PART"                 GPT disk      (raw data)
//	510                    55 aa                      MBR / boot sector (raw data)
//
// The VHD footer at the end wins because a fixed VHD's data comes first:
// a fixed VHD of a disk that begins with a qcow2 image, or with an MBR,
// is still a VHD.

// ContentKind sorts what Detect finds by what a command may do with it.
type ContentKind int

// Content kinds.
const (
	// ContentUnknown: no signature; a raw disk, or a damaged VHD.
	ContentUnknown ContentKind = iota
	// ContentVHD: a VHD footer, its copy at offset 0, or a dynamic
	// header. It says nothing about whether the VHD is intact.
	ContentVHD
	// ContentImage: another virtual disk format (qcow2, VHDX, VMDK...):
	// its bytes are metadata and data, not the disk, so copying them
	// as a raw disk gives a disk of garbage.
	ContentImage
	// ContentPacked: a compressed file or an archive; the disk is inside.
	ContentPacked
	// ContentRawData: a raw disk (or a CD image, an encrypted volume)
	// with a recognisable signature. It is a raw disk: convert reads it.
	ContentRawData
)

// Content is what Detect found.
type Content struct {
	Kind ContentKind
	// Format is a short name: "vhd", "qcow2", "vmdk", "xz", "iso9660",
	// "mbr"; "" when the kind is ContentUnknown.
	Format string
	// What says it in words for messages: "a qcow2 image".
	What string
}

// DetectHeadSize is how much of a file's start Detect looks at: enough
// for the ISO 9660 volume descriptor at 32 KiB.
const DetectHeadSize = 0x8800

type signature struct {
	off    int
	magic  string
	kind   ContentKind
	format string
	what   string
}

// headSignatures are tried kind by kind (Detect), in order within a
// kind; the first match wins. The weak two-byte boot signature comes
// last.
var headSignatures = []signature{
	{0, "QED\x00", ContentImage, "qed", "a QED image"},
	{0, "vhdxfile", ContentImage, "vhdx", "a VHDX image"},
	{0, "KDMV", ContentImage, "vmdk", "a VMDK image"},
	{0, "COWD", ContentImage, "vmdk", "a VMDK image (ESX sparse)"},
	{0, "# Disk DescriptorFile", ContentImage, "vmdk", "a VMDK descriptor (its data is in the extent files it names)"},
	{0, "WithoutFreeSpace", ContentImage, "parallels", "a Parallels image"},
	{0, "WithouFreSpacExt", ContentImage, "parallels", "a Parallels image"},
	{0, "\x1f\x8b\x08", ContentPacked, "gzip", "a gzip-compressed file"},
	{0, "\xfd7zXZ\x00", ContentPacked, "xz", "an xz-compressed file"},
	{0, "\x28\xb5\x2f\xfd", ContentPacked, "zstd", "a zstd-compressed file"},
	{0, "PK\x03\x04", ContentPacked, "zip", "a zip archive"},
	{0, "7z\xbc\xaf\x27\x1c", ContentPacked, "7z", "a 7-Zip archive"},
	{257, "ustar", ContentPacked, "tar", "a tar archive (an OVA is one)"},
	{0, "LUKS\xba\xbe", ContentRawData, "luks", "a LUKS encrypted volume"},
	{0x8001, "CD001", ContentRawData, "iso9660", "an ISO 9660 (CD/DVD) image"},
	{512, "EFI PART", ContentRawData, "gpt", "a raw disk image (GPT partition table)"},
	{4096, "EFI PART", ContentRawData, "gpt", "a raw disk image (GPT partition table, 4 KiB sectors)"},
	{510, "\x55\xaa", ContentRawData, "mbr", "a raw disk image (MBR boot sector)"},
}

// Detect says what a file holds from its first bytes (head: up to
// DetectHeadSize; the whole file if shorter) and its last 512 (tail: nil
// if the file is shorter than that). It is pure and never fails.
//
// The order is the table's: a VHD footer (at the end, or its copy at 0),
// then the other formats' magic at offset 0 and the archives, then a
// dynamic header at 512 with no footer left (a VHD damaged at both
// ends), then the signatures of raw disks.
func Detect(head, tail []byte) Content {
	vhd := Content{Kind: ContentVHD, Format: "vhd", What: "a VHD"}
	if len(tail) != FooterSize {
		tail = nil // too short for a VHD
	}
	// A file shorter than a footer that starts with a footer's cookie is
	// a VHD cut short, not a raw disk to copy as it is.
	if isVHDTail(tail) || hasAt(head, 0, footerCookie) {
		return vhd
	}
	for _, detect := range []func([]byte) (Content, bool){detectQCOW, detectVDI, detectBzip2, detectHead(ContentImage), detectHead(ContentPacked)} {
		if c, ok := detect(head); ok {
			return c
		}
	}
	if tail != nil && hasAt(head, FooterSize, headerCookie) {
		return vhd
	}
	if c, ok := detectHead(ContentRawData)(head); ok {
		return c
	}
	return Content{}
}

// detectHead tries the head signatures of one kind, in order.
func detectHead(kind ContentKind) func([]byte) (Content, bool) {
	return func(head []byte) (Content, bool) {
		for _, s := range headSignatures {
			if s.kind == kind && hasAt(head, s.off, s.magic) {
				return Content{Kind: s.kind, Format: s.format, What: s.what}, true
			}
		}
		return Content{}, false
	}
}

// isVHDTail reports whether the last 512 bytes carry a footer cookie, at
// their start or (pre-2004 Virtual PC's 511-byte footer) one byte in.
func isVHDTail(tail []byte) bool {
	return len(tail) == FooterSize && (hasAt(tail, 0, footerCookie) || hasAt(tail, 1, footerCookie))
}

func hasAt(b []byte, off int, magic string) bool {
	return off+len(magic) <= len(b) && string(b[off:off+len(magic)]) == magic
}

// detectQCOW tells qcow (version 1) from qcow2 (2 and 3) by the version
// that follows the shared magic, as qemu's probes do.
func detectQCOW(head []byte) (Content, bool) {
	if !hasAt(head, 0, "QFI\xfb") {
		return Content{}, false
	}
	if len(head) >= 8 && binary.BigEndian.Uint32(head[4:]) == 1 {
		return Content{Kind: ContentImage, Format: "qcow", What: "a qcow (version 1) image"}, true
	}
	return Content{Kind: ContentImage, Format: "qcow2", What: "a qcow2 image"}, true
}

// detectVDI wants both the text banner every VDI starts with and the
// signature at 0x40: either alone is too weak to refuse a raw disk on.
func detectVDI(head []byte) (Content, bool) {
	if hasAt(head, 0, "<<< ") && len(head) >= 0x44 && binary.LittleEndian.Uint32(head[0x40:]) == 0xbeda107f {
		return Content{Kind: ContentImage, Format: "vdi", What: "a VDI image"}, true
	}
	return Content{}, false
}

// detectBzip2 wants "BZh", a block size digit and the magic of a first
// block or of the end of an empty stream.
func detectBzip2(head []byte) (Content, bool) {
	if len(head) < 10 || !hasAt(head, 0, "BZh") || head[3] < '1' || head[3] > '9' {
		return Content{}, false
	}
	if m := head[4:10]; bytes.Equal(m, []byte{0x31, 0x41, 0x59, 0x26, 0x53, 0x59}) || bytes.Equal(m, []byte{0x17, 0x72, 0x45, 0x38, 0x50, 0x90}) {
		return Content{Kind: ContentPacked, Format: "bzip2", What: "a bzip2-compressed file"}, true
	}
	return Content{}, false
}

// howToConvert says how to get a VHD from a file holding c.
func (c Content) howToConvert(path string) string {
	switch c.Kind {
	case ContentImage:
		return fmt.Sprintf("convert it with qemu-img convert -O vpc -o subformat=dynamic,force_size=on %s NEW.vhd", path)
	case ContentPacked:
		return fmt.Sprintf("unpack it first (%s), then convert the disk image inside", unpackCommand(c.Format, path))
	}
	return fmt.Sprintf("'vhd convert --to dynamic %s NEW.vhd' makes a VHD of it", path)
}

func unpackCommand(format, path string) string {
	switch format {
	case "gzip":
		return "gzip -dk " + path
	case "xz":
		return "xz -dk " + path
	case "zstd":
		return "zstd -d " + path
	case "bzip2":
		return "bzip2 -dk " + path
	case "zip":
		return "unzip " + path
	case "7z":
		return "7z x " + path
	}
	return "tar -xf " + path
}

// DetectFile reads the head and tail of f and says what it holds.
func DetectFile(f File) (Content, error) {
	size, err := f.Size()
	if err != nil {
		return Content{}, ioError("stat", 0, err)
	}
	head := make([]byte, min(size, DetectHeadSize))
	if _, err := f.ReadAt(head, 0); err != nil {
		return Content{}, ioError("read the start of the file", 0, err)
	}
	var tail []byte
	if size >= FooterSize {
		tail = make([]byte, FooterSize)
		if _, err := f.ReadAt(tail, size-FooterSize); err != nil {
			return Content{}, ioError("read the end of the file", size-FooterSize, err)
		}
	}
	return Detect(head, tail), nil
}

// DetectPath opens path (a regular file or a block device) and says what
// it holds.
func DetectPath(path string) (Content, error) {
	f, err := OpenChecked(path, os.O_RDONLY, true)
	if err != nil {
		return Content{}, err
	}
	defer f.Close()
	c, err := DetectFile(OSFile(f))
	if err != nil {
		return Content{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// otherFormat explains a footer that could not be read (err, from
// readFooter): when the file positively holds another format it returns
// a *FormatError naming it, else nil and the caller reports err. A
// failure to read the file for detection also gives nil: err stands.
func otherFormat(f File, name string, err error) error {
	if !errors.Is(err, ErrCorrupt) {
		return nil
	}
	c, derr := DetectFile(f)
	if derr != nil || c.Kind == ContentVHD || c.Kind == ContentUnknown {
		return nil
	}
	return &FormatError{Path: name, Content: c}
}

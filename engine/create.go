package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// CreateOptions describe a new image.
type CreateOptions struct {
	Type DiskType
	// Size is the virtual size in bytes, a whole number of sectors.
	Size int64
	// BlockSize of a dynamic or differencing image; DefaultBlockSize if 0.
	BlockSize int64
	// UUID of the new image; random if zero.
	UUID UUID
	// Time stamps the footer; now if zero.
	Time time.Time
	// Parent describes a differencing image's parent.
	Parent *ParentInfo
	// KeepTimestamp keeps Time as the footer's timestamp even after the
	// new image is written (see Image.stampFooter): a copy of an image
	// that children depend on, like a compacted one, must keep it.
	KeepTimestamp bool
	// Creator names the creator in place of vhdkit's (see creatorApp):
	// a compacted blktap image stays one ("tap", with its version), so
	// Xen's tools keep their batmap in it, which a new dynamic or
	// differencing image of a blktap creator gets (batmap.go).
	Creator *Creator
	// Hidden is Xen's "hidden" flag (footer byte 85), kept by compaction.
	Hidden uint8
}

// Creator is what a footer says made the image.
type Creator struct {
	App     [4]byte
	Version uint32
	HostOS  [4]byte
}

// CreatedBy returns the footer's creator fields.
func (f *Footer) CreatedBy() Creator {
	return Creator{App: f.CreatorApp, Version: f.CreatorVersion, HostOS: f.CreatorHostOS}
}

// ParentInfo is what a differencing image records of its parent.
type ParentInfo struct {
	UUID      UUID
	Timestamp uint32
	// Name is stored in the header's parent name field.
	Name string
	// Locators are stored in order, at most eight.
	Locators []LocatorPath
}

// LocatorPath is a parent locator to write: a platform code and a path.
type LocatorPath struct {
	Code string
	Path string
}

// Creator fields of new images. QEMU before 2025 (7.2 is Debian 12's)
// sizes a VHD by its CHS geometry unless the creator is one it knows to
// use current size ("win ", "qem2", "d2v ", "CTXS", "tap\0"); CHS cannot
// express most sizes, so any other creator makes QEMU see a smaller disk
// than Windows, libvhdi and vhdkit do. Hyper-V's "win " is the creator
// every reader sizes by the current size field, so new images carry it,
// with Hyper-V's version and host OS fields, and QEMU, libvhdi and
// Windows all read them at the size asked for.
var (
	creatorApp     = [4]byte{'w', 'i', 'n', ' '}
	creatorVersion = uint32(0x000a0000)
	creatorHostOS  = [4]byte{'W', 'i', '2', 'k'}
)

// ValidateSize reports whether size can be the size of a new image.
func ValidateSize(size int64) error {
	switch {
	case size <= 0:
		return fmt.Errorf("vhd: size %d: must be positive", size)
	case size%SectorSize != 0:
		return fmt.Errorf("vhd: size %d is not a whole number of 512-byte sectors (nearest: %d)", size, alignUp(size, SectorSize))
	case size > MaxSize:
		return fmt.Errorf("vhd: size %d is over the VHD limit of 2040 GiB (%d bytes)", size, int64(MaxSize))
	}
	return nil
}

// Create makes a new image at path, which must not exist, and returns it
// open for writing. A failed create removes the file.
func Create(path string, opts CreateOptions) (*Image, error) {
	if err := CheckNewFileFolder(path); err != nil {
		return nil, err
	}
	osf, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	unlock, err := lockFile(osf, path, true)
	if err != nil {
		osf.Close()
		return nil, err
	}
	img, err := CreateFile(OSFile(osf), path, opts)
	if err != nil {
		unlock()
		osf.Close()
		os.Remove(path)
		return nil, err
	}
	img.unlock = unlock
	img.share = shareLock(osf, path)
	if err := syncDir(filepath.Dir(path)); err != nil {
		img.Close()
		os.Remove(path)
		return nil, err
	}
	return img, nil
}

// CreateFile writes a new image into the empty file f and opens it.
func CreateFile(f File, name string, opts CreateOptions) (*Image, error) {
	if err := ValidateSize(opts.Size); err != nil {
		return nil, err
	}
	ft := newFooter(opts)
	var err error
	switch opts.Type {
	case TypeFixed:
		err = writeFixed(f, ft)
	case TypeDynamic, TypeDifferencing:
		err = writeSparse(f, ft, opts)
	default:
		err = fmt.Errorf("vhd: cannot create disk type %d", opts.Type)
	}
	if err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, ioError("sync", 0, err)
	}
	img, err := OpenFile(f, name, Options{})
	if err == nil && opts.KeepTimestamp {
		img.stamped.Store(true)
	}
	return img, err
}

func newFooter(opts CreateOptions) Footer {
	t := opts.Time
	if t.IsZero() {
		t = time.Now()
	}
	id := opts.UUID
	if id.IsZero() {
		id = NewUUID()
	}
	ft := Footer{
		Features:       featureReserved,
		Version:        formatVersion,
		DataOffset:     noDataOffset,
		Timestamp:      TimestampOf(t),
		CreatorApp:     creatorApp,
		CreatorVersion: creatorVersion,
		CreatorHostOS:  creatorHostOS,
		OriginalSize:   uint64(opts.Size),
		CurrentSize:    uint64(opts.Size),
		Geometry:       GeometryFor(opts.Size),
		DiskType:       opts.Type,
		UUID:           id,
		Hidden:         opts.Hidden,
	}
	if c := opts.Creator; c != nil {
		ft.CreatorApp, ft.CreatorVersion, ft.CreatorHostOS = c.App, c.Version, c.HostOS
	}
	if opts.Type != TypeFixed {
		ft.DataOffset = FooterSize
	}
	return ft
}

// writeFixed sizes the file (sparse: the host allocates on write) and
// puts the footer after the data.
func writeFixed(f File, ft Footer) error {
	size := int64(ft.CurrentSize)
	if err := f.Truncate(size + FooterSize); err != nil {
		return ioError("truncate", size, err)
	}
	raw := ft.Marshal()
	if _, err := f.WriteAt(raw[:], size); err != nil {
		return ioError("write footer", size, err)
	}
	return nil
}

// metaReserve is the room a new differencing image leaves free between
// its BAT and its parent locators, as Windows reserves room for its
// locators: a change of the parent link (set-parent, a merge moving the
// image onto another parent) writes the new header and locators there,
// before the first block, where Xen's vhd-util check wants them
// (relocate.go). 16 KiB holds a header and three locators of paths up to
// 2500 characters.
const metaReserve = 16 << 10

// writeSparse lays out a new dynamic or differencing image:
//
//	0       footer copy
//	512     dynamic header
//	1536    BAT, all entries unallocated
//	...     blktap's batmap header and map, for a blktap creator
//	...     differencing: metaReserve bytes left free, then the parent
//	        locator data, each padded to a sector
//	end     footer
func writeSparse(f File, ft Footer, opts CreateOptions) error {
	bs := opts.BlockSize
	if bs == 0 {
		bs = DefaultBlockSize
	}
	if bs < MinBlockSize || bs > MaxBlockSize || bs&(bs-1) != 0 {
		return fmt.Errorf("vhd: block size %d is not a power of two between 512 bytes and 256 MiB", bs)
	}
	if (opts.Type == TypeDifferencing) != (opts.Parent != nil) {
		return errors.New("vhd: a differencing image needs a parent, and only it")
	}
	entries := uint32((opts.Size + bs - 1) / bs)
	h := DynamicHeader{
		DataOffset:      ^uint64(0),
		TableOffset:     FooterSize + HeaderSize,
		Version:         formatVersion,
		MaxTableEntries: entries,
		BlockSize:       uint32(bs),
	}
	end := int64(h.TableOffset) + batBytes(entries)
	var writes []pendingWrite
	if batmapRuleOf(&ft) != batmapNever {
		bw, bend := newBatmap(end, entries, ft.CurrentSize)
		writes, end = append(writes, bw...), bend
	}
	var locData [][]byte
	if p := opts.Parent; p != nil {
		end += metaReserve
		if len(p.Locators) > locatorCount {
			return fmt.Errorf("vhd: %d parent locators, at most %d fit", len(p.Locators), locatorCount)
		}
		h.ParentUUID, h.ParentTimestamp, h.ParentName = p.UUID, p.Timestamp, p.Name
		for i, lp := range p.Locators {
			data := EncodeLocatorPath(lp.Code, lp.Path)
			if data == nil || len(data) > maxLocatorLen {
				return fmt.Errorf("vhd: cannot store parent locator %q for %q", lp.Code, lp.Path)
			}
			space := alignUp(int64(len(data)), SectorSize)
			copy(h.Locators[i].Code[:], lp.Code)
			h.Locators[i].DataSpace = uint32(space)
			h.Locators[i].DataLength = uint32(len(data))
			h.Locators[i].DataOffset = uint64(end)
			locData = append(locData, data)
			end += space
		}
	}
	if err := f.Truncate(end + FooterSize); err != nil {
		return ioError("truncate", end, err)
	}
	fraw := ft.Marshal()
	hraw := h.Marshal()
	writes = append(writes, pendingWrite{0, fraw[:]}, pendingWrite{FooterSize, hraw[:]}, pendingWrite{end, fraw[:]})
	for i, d := range locData {
		writes = append(writes, pendingWrite{int64(h.Locators[i].DataOffset), d})
	}
	writes = append(writes, pendingWrite{int64(h.TableOffset), unusedBAT(entries)})
	for _, w := range writes {
		if _, err := f.WriteAt(w.data, w.off); err != nil {
			return ioError("write", w.off, err)
		}
	}
	return nil
}

// unusedBAT is an encoded BAT with every entry unallocated. A 2040 GiB
// image with 2 MiB blocks has a 4 MiB table.
func unusedBAT(entries uint32) []byte {
	b := make([]byte, batBytes(entries))
	for i := range b {
		b[i] = 0xff
	}
	return b
}

package engine

import "fmt"

// SetUUID gives the image a new identifier, as Hyper-V's Set-VHD
// -ResetDiskIdentifier and VirtualBox's sethduuid do, so that a copy can
// be attached beside its original. Everything else stays: the data, the
// parent link of a differencing image, and the footer's timestamp, which
// says when the data last changed and it did not. (Children recording
// this image as their parent stop opening either way: they name it by
// UUID; chains refuses unless forced.) The nil UUID is refused: it names
// no disk, and blktap reads it as "the parent is raw". No other I/O may
// run on the image meanwhile.
//
// A fixed image has one footer, the file's last sector: the data (and a
// modification stamp a flush owes) is flushed, then that one aligned
// sector is rewritten where it is and synced. Storage writes a sector
// whole, so a crash leaves the old footer or the new, nothing between.
//
// Dynamic and differencing images have two footer copies and commit
// through relocate (relocate.go): a new header in free space, then the
// footer at the end, then the copy at offset 0. For a new UUID the
// commit point is the last of these writes, not the first: until the
// copy at offset 0 holds the new UUID, the footer at the end names
// another disk than the copy, and opening takes it for data a crash left
// at the end (strayFooter) and opens from the copy: the old footer,
// naming the old header, which the relocation did not touch. So a crash
// anywhere leaves the old image or the new one. In the window between
// the two footer writes vhd check reports the footer at the end as
// damaged, and vhd repair (or opening for writing) puts the old footer
// back there.
func (img *Image) SetUUID(u UUID) error {
	if img.readOnly {
		return ErrReadOnly
	}
	if u.IsZero() {
		return fmt.Errorf("%s: the nil UUID (all zeros) names no disk; give another", img.name)
	}
	if img.Footer().UUID == u {
		return nil
	}
	if img.sparse != nil {
		return img.sparse.relocate(metaChange{uuid: u})
	}
	return img.lay.(*fixed).setUUID(u)
}

// setUUID rewrites a fixed image's footer with UUID u, as SetUUID says.
func (x *fixed) setUUID(u UUID) error {
	if err := x.flush(); err != nil {
		return err
	}
	ft := x.img.Footer()
	ft.UUID = u
	raw := ft.Marshal()
	if err := x.writeFooterSynced(raw); err != nil {
		// What reached the file is unknown (part of the footer, or all
		// of it without a sync): no later write may build on it.
		err = fmt.Errorf("%w (image is now read-only until reopened)", err)
		x.failed.CompareAndSwap(nil, &err)
		return err
	}
	x.img.footerMu.Lock()
	x.img.footer = ft
	x.img.footerMu.Unlock()
	return nil
}

// writeFooterSynced writes raw over the footer and syncs.
func (x *fixed) writeFooterSynced(raw [FooterSize]byte) error {
	if _, err := x.f.WriteAt(raw[:], x.footerOff); err != nil {
		return ioError("write footer", x.footerOff, err)
	}
	if err := x.f.Sync(); err != nil {
		return ioError("sync", 0, err)
	}
	return nil
}

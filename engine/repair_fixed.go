package engine

import "fmt"

// repairFixedGap cuts the bytes that lie between a fixed image's data
// and its footer, so the footer follows the data as the format says.
// Such bytes belong to nothing (check warns of them); cutting them
// changes no byte of the disk.
//
// The file's last sector must be a whole footer at every moment:
//  1. If the gap is shorter than a footer, the footer's new place
//     overlaps the old footer; so a copy is first appended past the end
//     (at a sector boundary) and synced. The file then ends with a
//     footer and a longer gap.
//  2. The footer is written right after the data and synced. What it
//     overwrites is gap, or an old footer that is no longer the last.
//  3. The file is cut after it and synced: the cut only removes gap and
//     old footers, and leaves the new footer last.
func repairFixedGap(f File, ft Footer, fileSize int64) ([]string, error) {
	dataEnd := int64(ft.CurrentSize)
	footerLen := int64(FooterSize)
	if ft.Short {
		footerLen = footerSize511
	}
	gap := fileSize - footerLen - dataEnd
	if gap <= 0 {
		return nil, nil
	}
	raw := ft.Marshal()
	if gap < FooterSize {
		at := alignUp(fileSize, 512)
		if _, err := f.WriteAt(raw[:], at); err != nil {
			return nil, ioError("write footer", at, err)
		}
		if err := f.Sync(); err != nil {
			return nil, ioError("sync", 0, err)
		}
	}
	if _, err := f.WriteAt(raw[:], dataEnd); err != nil {
		return nil, ioError("write footer", dataEnd, err)
	}
	if err := f.Sync(); err != nil {
		return nil, ioError("sync", 0, err)
	}
	if err := f.Truncate(dataEnd + FooterSize); err != nil {
		return nil, ioError("truncate", dataEnd+FooterSize, err)
	}
	if err := f.Sync(); err != nil {
		return nil, ioError("sync", 0, err)
	}
	return []string{fmt.Sprintf("cut %d bytes that belonged to nothing between the disk's data and the footer (offset %#x)", gap, dataEnd)}, nil
}

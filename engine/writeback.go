package engine

import "golang.org/x/sys/unix"

// StartWriteback starts writing every dirty page of the file to disk
// (sync_file_range SYNC_FILE_RANGE_WRITE). It waits for nothing and
// makes nothing durable: it only leaves less for a later Sync.
func (o *osFile) StartWriteback() error {
	return unix.SyncFileRange(int(o.f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}

// StartWriteback asks the host to start writing what the image holds in
// the page cache to disk, without waiting, so the disk works while a
// long copy goes on and the Flush at its end has less to wait for. It
// changes no durability guarantee: data, then metadata, still become
// durable only in Flush, in Flush's order.
func (img *Image) StartWriteback() error {
	if ws, ok := img.f.(WritebackStarter); ok && !img.readOnly {
		return ws.StartWriteback()
	}
	return nil
}

// StartWriteback is Image.StartWriteback for a raw disk.
func (d *RawDisk) StartWriteback() error {
	if d.readOnly || d.closed.Load() {
		return nil
	}
	return unix.SyncFileRange(int(d.f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}

package engine

// CloseUnflushed closes the image without flushing it, for an image about to be
// deleted (a failed or interrupted convert): syncing data that is thrown
// away next would only make the user wait. What was written but not
// flushed may or may not reach the file.
func (img *Image) CloseUnflushed() error {
	if img.closed.Swap(true) {
		return ErrClosed
	}
	img.unlock()
	return img.f.Close()
}

// CloseUnflushed closes the disk without flushing it; see
// Image.CloseUnflushed.
func (d *RawDisk) CloseUnflushed() error {
	if d.closed.Swap(true) {
		return ErrClosed
	}
	d.unlock()
	return d.f.Close()
}

// unflushedCloser is a disk convert made itself and may throw away.
type unflushedCloser interface{ CloseUnflushed() error }

var (
	_ unflushedCloser = (*Image)(nil)
	_ unflushedCloser = (*RawDisk)(nil)
)

package engine

// Discard closes the image without flushing it, for an image about to be
// deleted (a failed or interrupted convert): syncing data that is thrown
// away next would only make the user wait. What was written but not
// flushed may or may not reach the file.
func (img *Image) Discard() error {
	if img.closed.Swap(true) {
		return ErrClosed
	}
	img.unlock()
	return img.f.Close()
}

// Discard closes the disk without flushing it; see Image.Discard.
func (d *RawDisk) Discard() error {
	if d.closed.Swap(true) {
		return ErrClosed
	}
	d.unlock()
	return d.f.Close()
}

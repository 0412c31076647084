package engine

// ParentLocator is a decoded parent locator of a differencing image.
type ParentLocator struct {
	Code string `json:"code"`
	// Path is the decoded path; empty for codes that hold no path (the
	// Mac alias blob, deprecated codes).
	Path string `json:"path"`
}

// ParentLocators reads and decodes the image's parent locators, in header
// order. Their offsets and lengths were validated at open.
func (img *Image) ParentLocators() ([]ParentLocator, error) {
	if img.sparse == nil {
		return nil, nil
	}
	var out []ParentLocator
	for _, l := range img.sparse.hdr.Locators {
		if l.Empty() {
			continue
		}
		pl := ParentLocator{Code: l.CodeString()}
		data := make([]byte, l.DataLength)
		if err := img.sparse.pread(data, int64(l.DataOffset)); err != nil {
			return nil, err
		}
		if p, err := DecodeLocatorPath(pl.Code, data); err == nil {
			pl.Path = p
		}
		out = append(out, pl)
	}
	return out, nil
}

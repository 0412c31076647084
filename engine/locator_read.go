package engine

// ParentLocator is one parent locator of a differencing image, decoded.
type ParentLocator struct {
	// Code is the platform code: "W2ku", "W2ru", "MacX", ...
	Code string
	// Path is the decoded path; empty when Err is set.
	Path string
	// Err says why the locator's data could not be decoded (a Mac alias
	// blob, a deprecated code).
	Err error
}

// ParentLocators reads and decodes the non-empty parent locators of a
// differencing image, in header order; nil for other images. Their
// offsets and lengths were validated when the image was opened.
func (img *Image) ParentLocators() ([]ParentLocator, error) {
	if img.sparse == nil || !img.sparse.differencing {
		return nil, nil
	}
	var list []ParentLocator
	for _, l := range img.sparse.hdr.Locators {
		if l.Empty() {
			continue
		}
		data := make([]byte, l.DataLength)
		if _, err := img.f.ReadAt(data, int64(l.DataOffset)); err != nil {
			return list, ioError("read parent locator", int64(l.DataOffset), err)
		}
		pl := ParentLocator{Code: l.CodeString()}
		pl.Path, pl.Err = DecodeLocatorPath(pl.Code, data)
		list = append(list, pl)
	}
	return list, nil
}

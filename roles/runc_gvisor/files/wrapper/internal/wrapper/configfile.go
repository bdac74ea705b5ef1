// SPDX-License-Identifier: Apache-2.0

package wrapper

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// TempSuffix names the file a new config.json is written to before it
// replaces the old one.
const TempSuffix = ".runc-gvisor.tmp"

// maxSpecSize bounds what the wrapper reads; CRI specs are tens of kilobytes.
const maxSpecSize = 16 << 20

// ConfigError is a problem with a bundle's config.json, named by its path.
type ConfigError struct {
	Path string
	Err  error
}

func (e ConfigError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e ConfigError) Unwrap() error { return e.Err }

// AdaptBundle adapts BUNDLE/config.json in place and reports what changed.
// On any error the file is left as it was. When nothing changes the file is
// not written at all, so a second call (or a spec that needs nothing) costs
// one read.
func AdaptBundle(bundle string, want Adaptations) (Changes, error) {
	path := filepath.Join(bundle, "config.json")
	doc, info, err := readSpec(path, bundle)
	if err != nil {
		return Changes{}, ConfigError{path, err}
	}
	adapted, changes, err := Adapt(doc, want)
	if err != nil {
		return Changes{}, ConfigError{path, err}
	}
	if !changes.Changed() {
		return changes, nil
	}
	if err := replaceFile(path, adapted, info); err != nil {
		return Changes{}, ConfigError{path, err}
	}
	return changes, nil
}

func readSpec(path, bundle string) ([]byte, os.FileInfo, error) {
	// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
	// writer forever, hanging the shim's create; fstat below refuses it. On a
	// regular file the flag changes nothing.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, explainOpenError(err, bundle)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, nil, pathErrorCause(err)
	}
	if info.IsDir() {
		return nil, nil, errors.New("is a directory, not a file")
	}
	if !info.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("not a regular file (%s)", info.Mode().Type())
	}
	if info.Size() > maxSpecSize {
		return nil, nil, fmt.Errorf("larger than %d bytes", maxSpecSize)
	}
	// Sized from fstat, so a spec is read without regrowing the buffer.
	var doc bytes.Buffer
	doc.Grow(int(info.Size()) + bytes.MinRead)
	if _, err := doc.ReadFrom(io.LimitReader(f, maxSpecSize+1)); err != nil {
		return nil, nil, pathErrorCause(err)
	}
	return doc.Bytes(), info, nil
}

// explainOpenError says whether the bundle itself is missing: that is a
// different mistake (a wrong --bundle or working directory) from a bundle
// without a config.json.
func explainOpenError(err error, bundle string) error {
	if errors.Is(err, os.ErrNotExist) {
		if _, statErr := os.Stat(bundle); statErr != nil {
			return fmt.Errorf("bundle directory %s: %w", bundle, pathErrorCause(statErr))
		}
	}
	return pathErrorCause(err)
}

// replaceFile writes data beside path and renames it over path, so runc
// never sees a half-written spec. The new file keeps the old one's mode and
// owner.
func replaceFile(path string, data []byte, old os.FileInfo) (err error) {
	tmp := path + TempSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, old.Mode().Perm())
	if err != nil {
		return pathErrorCause(err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = keepModeAndOwner(f, old); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return pathErrorCause(err)
	}
	if err = f.Sync(); err != nil {
		return pathErrorCause(err)
	}
	if err = f.Close(); err != nil {
		return pathErrorCause(err)
	}
	return pathErrorCause(os.Rename(tmp, path))
}

// keepModeAndOwner gives the new file the old one's permissions (the umask
// applied at creation may have cut some) and, when they differ from ours,
// its owner.
func keepModeAndOwner(f *os.File, old os.FileInfo) error {
	if err := f.Chmod(old.Mode().Perm()); err != nil {
		return pathErrorCause(err)
	}
	st, ok := old.Sys().(*syscall.Stat_t)
	if !ok || (int(st.Uid) == os.Geteuid() && int(st.Gid) == os.Getegid()) {
		return nil
	}
	return pathErrorCause(f.Chown(int(st.Uid), int(st.Gid)))
}

// pathErrorCause drops the path an *os.PathError repeats, since every
// message here already starts with the path; other errors pass unchanged.
func pathErrorCause(err error) error {
	var pathErr *os.PathError
	if errors.As(err, &pathErr) {
		return fmt.Errorf("%s: %w", pathErr.Op, pathErr.Err)
	}
	return err
}

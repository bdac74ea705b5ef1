// SPDX-License-Identifier: Apache-2.0

package wrapper

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
)

// A new config.json is written to config.json.runc-gvisor-<16 hex
// digits>.tmp beside the old one, then renamed over it.
const (
	tempInfix  = ".runc-gvisor-"
	tempSuffix = ".tmp"
	// tempTries bounds the names tried when one is taken. Each is a fresh
	// 64-bit random number, so one taken name already means that someone
	// guessed it; the bound only keeps such a guesser from looping us.
	tempTries = 16
)

// tempRandom draws the temporary file's random part; tests replace it.
// The runtime's generator is seeded from the kernel for each process, which
// is enough: the name only has to be unlikely to be taken, since the file
// is created exclusively and never through a link.
var tempRandom = rand.Uint64

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
// owner. The temporary file is created exclusively under a fresh random
// name and never through a symbolic link, so a leftover from a killed call
// or a file planted in the bundle can neither block the write nor redirect
// it; it is removed on every failure.
func replaceFile(path string, data []byte, old os.FileInfo) (err error) {
	f, tmp, err := createTemp(path)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return pathErrorCause(err)
	}
	if err = keepModeAndOwner(f, old); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return pathErrorCause(err)
	}
	if err = f.Close(); err != nil {
		return pathErrorCause(err)
	}
	return pathErrorCause(os.Rename(tmp, path))
}

// createTemp creates a new, empty file beside path that only its owner can
// open (the old file's mode is given to it once it is written). O_EXCL
// fails on any existing name, a dangling link included, and O_NOFOLLOW
// says the same again for the last component; a taken name is retried
// with another.
func createTemp(path string) (*os.File, string, error) {
	const flags = os.O_WRONLY | os.O_CREATE | os.O_EXCL | syscall.O_NOFOLLOW | syscall.O_CLOEXEC
	for try := 1; ; try++ {
		tmp := tempName(path, tempRandom())
		f, err := os.OpenFile(tmp, flags, 0o600)
		if err == nil {
			return f, tmp, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return nil, "", pathErrorCause(err)
		}
		if try == tempTries {
			return nil, "", fmt.Errorf("no free name for the temporary file beside it in %d tries (the last %s: %w)",
				tempTries, filepath.Base(tmp), pathErrorCause(err))
		}
	}
}

// tempName is the temporary file for path with the random part r.
func tempName(path string, r uint64) string {
	return fmt.Sprintf("%s%s%016x%s", path, tempInfix, r, tempSuffix)
}

// keepModeAndOwner gives the new file (created 0600) the old one's
// permissions and, when they differ from ours, its owner.
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

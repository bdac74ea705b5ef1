// SPDX-License-Identifier: Apache-2.0

package wrapper

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const specWithCgroup = `{"ociVersion":"1.2.0","linux":{"namespaces":[{"type":"pid"},{"type":"cgroup"}]}}`

func writeBundle(t *testing.T, config string, mode os.FileMode) (bundle, path string) {
	t.Helper()
	bundle = t.TempDir()
	path = filepath.Join(bundle, "config.json")
	if err := os.WriteFile(path, []byte(config), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return bundle, path
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Sys().(*syscall.Stat_t).Ino
}

func assertNoTempFile(t *testing.T, bundle string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(bundle, "config.json"+TempSuffix)); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind (stat: %v)", err)
	}
}

func TestAdaptBundleRewritesAtomicallyKeepingMode(t *testing.T) {
	bundle, path := writeBundle(t, specWithCgroup, 0o640)
	before := inode(t, path)
	changes, err := AdaptBundle(bundle, dropCgroup)
	if err != nil || changes.DroppedCgroupNamespaces != 1 {
		t.Fatalf("AdaptBundle: %+v, %v", changes, err)
	}
	got, _ := os.ReadFile(path)
	if want := `{"ociVersion":"1.2.0","linux":{"namespaces":[{"type":"pid"}]}}`; string(got) != want {
		t.Errorf("config.json = %s", got)
	}
	info, _ := os.Stat(path)
	if info.Mode().Perm() != 0o640 {
		t.Errorf("mode = %v, want 0640", info.Mode().Perm())
	}
	if inode(t, path) == before {
		t.Error("config.json was written in place, not replaced by rename")
	}
	assertNoTempFile(t, bundle)
}

func TestAdaptBundleKeepsTheOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the file another owner")
	}
	bundle, path := writeBundle(t, specWithCgroup, 0o600)
	if err := os.Chown(path, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if _, err := AdaptBundle(bundle, dropCgroup); err != nil {
		t.Fatal(err)
	}
	info, _ := os.Stat(path)
	st := info.Sys().(*syscall.Stat_t)
	if st.Uid != 1234 || st.Gid != 5678 || info.Mode().Perm() != 0o600 {
		t.Errorf("owner %d:%d mode %v, want 1234:5678 0600", st.Uid, st.Gid, info.Mode().Perm())
	}
}

func TestAdaptBundleLeavesUnchangedFileAlone(t *testing.T) {
	bundle, path := writeBundle(t, `{"linux":{"namespaces":[{"type":"pid"}]}}`, 0o644)
	before := inode(t, path)
	for i := 0; i < 2; i++ {
		changes, err := AdaptBundle(bundle, everything)
		if err != nil || changes.Changed() {
			t.Fatalf("AdaptBundle: %+v, %v", changes, err)
		}
	}
	if inode(t, path) != before {
		t.Error("config.json was rewritten though nothing changed")
	}
}

func TestAdaptBundleTwiceEqualsOnce(t *testing.T) {
	bundle, path := writeBundle(t, specWithCgroup, 0o644)
	if _, err := AdaptBundle(bundle, dropCgroup); err != nil {
		t.Fatal(err)
	}
	once, _ := os.ReadFile(path)
	before := inode(t, path)
	changes, err := AdaptBundle(bundle, dropCgroup)
	if err != nil || changes.Changed() || inode(t, path) != before {
		t.Fatalf("second call: %+v, %v, rewritten=%v", changes, err, inode(t, path) != before)
	}
	twice, _ := os.ReadFile(path)
	if !bytes.Equal(once, twice) {
		t.Errorf("second call changed the file")
	}
}

func TestAdaptBundleErrors(t *testing.T) {
	t.Run("invalid JSON leaves the file untouched", func(t *testing.T) {
		const broken = `{"linux":{"namespaces":[{"type":"cgroup"}]` // truncated
		bundle, path := writeBundle(t, broken, 0o644)
		_, err := AdaptBundle(bundle, dropCgroup)
		wantErr := path + ": invalid JSON at offset 42: unexpected end of JSON input"
		if err == nil || err.Error() != wantErr {
			t.Errorf("err = %v\nwant %s", err, wantErr)
		}
		if got, _ := os.ReadFile(path); string(got) != broken {
			t.Errorf("file changed to %s", got)
		}
		assertNoTempFile(t, bundle)
	})
	t.Run("B9 leaves the file untouched", func(t *testing.T) {
		const join = `{"linux":{"namespaces":[{"type":"cgroup"},{"type":"pid","path":"/proc/9/ns/pid"}]}}`
		bundle, path := writeBundle(t, join, 0o644)
		_, err := AdaptBundle(bundle, hostWithB9)
		var b9 B9Error
		if !errors.As(err, &b9) || !strings.HasPrefix(err.Error(), path+": blocker B9: ") {
			t.Errorf("err = %v", err)
		}
		if got, _ := os.ReadFile(path); string(got) != join {
			t.Errorf("file changed to %s", got)
		}
	})
	t.Run("config.json is a directory", func(t *testing.T) {
		bundle := t.TempDir()
		path := filepath.Join(bundle, "config.json")
		if err := os.Mkdir(path, 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := AdaptBundle(bundle, dropCgroup)
		if want := path + ": is a directory, not a file"; err == nil || err.Error() != want {
			t.Errorf("err = %v, want %s", err, want)
		}
	})
	t.Run("config.json is a FIFO", func(t *testing.T) {
		bundle := t.TempDir()
		path := filepath.Join(bundle, "config.json")
		if err := syscall.Mkfifo(path, 0o644); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { _, err := AdaptBundle(bundle, dropCgroup); done <- err }()
		select {
		case err := <-done:
			if want := path + ": not a regular file (p---------)"; err == nil || err.Error() != want {
				t.Errorf("err = %v, want %s", err, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("AdaptBundle waits for a writer on a FIFO")
		}
	})
	t.Run("no config.json", func(t *testing.T) {
		bundle := t.TempDir()
		_, err := AdaptBundle(bundle, dropCgroup)
		if want := filepath.Join(bundle, "config.json") + ": open: no such file or directory"; err == nil || err.Error() != want {
			t.Errorf("err = %v, want %s", err, want)
		}
	})
	t.Run("missing bundle", func(t *testing.T) {
		bundle := filepath.Join(t.TempDir(), "gone")
		_, err := AdaptBundle(bundle, dropCgroup)
		want := filepath.Join(bundle, "config.json") + ": bundle directory " + bundle + ": stat: no such file or directory"
		if err == nil || err.Error() != want {
			t.Errorf("err = %v\nwant %s", err, want)
		}
	})
	t.Run("unwritable bundle leaves the file untouched", func(t *testing.T) {
		bundle, path := writeBundle(t, specWithCgroup, 0o644)
		// A directory where the temporary file should go makes the write fail
		// even for root, who ignores permission bits.
		if err := os.Mkdir(path+TempSuffix, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := AdaptBundle(bundle, dropCgroup); err == nil {
			t.Error("no error")
		}
		if got, _ := os.ReadFile(path); string(got) != specWithCgroup {
			t.Errorf("file changed to %s", got)
		}
	})
}

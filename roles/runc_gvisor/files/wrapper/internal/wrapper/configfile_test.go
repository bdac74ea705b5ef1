// SPDX-License-Identifier: Apache-2.0

package wrapper

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
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

// assertNoTempFile checks that config.json is all the bundle holds.
func assertNoTempFile(t *testing.T, bundle string) {
	t.Helper()
	if got := bundleFiles(t, bundle); !reflect.DeepEqual(got, []string{"config.json"}) {
		t.Errorf("files left in the bundle: %q", got)
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
	t.Run("no free temporary name leaves the file untouched", func(t *testing.T) {
		bundle, path := writeBundle(t, specWithCgroup, 0o644)
		// Every name tried is taken by a directory, which fails the create
		// even for root, who ignores permission bits.
		draws := fixedTempRandom(t, 7)
		taken := tempName(path, 7)
		if err := os.Mkdir(taken, 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := AdaptBundle(bundle, dropCgroup)
		want := path + ": no free name for the temporary file beside it in 16 tries (the last " + filepath.Base(taken) + ": open: file exists)"
		if err == nil || err.Error() != want {
			t.Errorf("err = %v\nwant %s", err, want)
		}
		if *draws != tempTries {
			t.Errorf("%d names tried, want %d", *draws, tempTries)
		}
		if got, _ := os.ReadFile(path); string(got) != specWithCgroup {
			t.Errorf("file changed to %s", got)
		}
		if info, err := os.Stat(taken); err != nil || !info.IsDir() {
			t.Errorf("the directory in the way was removed: %v", err)
		}
		if got := bundleFiles(t, bundle); len(got) != 2 {
			t.Errorf("bundle holds %q", got)
		}
	})
	t.Run("an unwritable bundle leaves no temporary file", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root writes to a read-only directory")
		}
		bundle, path := writeBundle(t, specWithCgroup, 0o644)
		if err := os.Chmod(bundle, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(bundle, 0o755) })
		_, err := AdaptBundle(bundle, dropCgroup)
		if want := path + ": open: permission denied"; err == nil || err.Error() != want {
			t.Errorf("err = %v, want %s", err, want)
		}
		assertNoTempFile(t, bundle)
	})
}

// oldTempName is the fixed name the temporary file once had: anyone who can
// write to the bundle could plant a link there and have the wrapper write
// through it.
const oldTempName = "config.json.runc-gvisor.tmp"

// bundleFiles lists the names in a bundle directory.
func bundleFiles(t *testing.T, bundle string) []string {
	t.Helper()
	entries, err := os.ReadDir(bundle)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names
}

// plantVictim makes a file outside the bundle that a planted link points at.
func plantVictim(t *testing.T) (victim string, content string) {
	t.Helper()
	victim = filepath.Join(t.TempDir(), "victim")
	content = "not config.json: must stay as it is\n"
	if err := os.WriteFile(victim, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return victim, content
}

// assertPlantedLinkIgnored checks that the victim behind a planted link is
// untouched, that the link is still there (it is not the wrapper's), and
// that config.json is a regular file with the adapted spec.
func assertPlantedLinkIgnored(t *testing.T, bundle, link, victim, content, wantConfig string) {
	t.Helper()
	if got, _ := os.ReadFile(victim); string(got) != content {
		t.Errorf("the file behind the planted link was written: %q", got)
	}
	if target, err := os.Readlink(link); err != nil || target != victim {
		t.Errorf("the planted link was changed (readlink %q, %v)", target, err)
	}
	path := filepath.Join(bundle, "config.json")
	info, err := os.Lstat(path)
	if err != nil || !info.Mode().IsRegular() {
		t.Fatalf("config.json is not a regular file (lstat: %v)", err)
	}
	if got, _ := os.ReadFile(path); string(got) != wantConfig {
		t.Errorf("config.json = %s\nwant %s", got, wantConfig)
	}
}

const specWithoutCgroup = `{"ociVersion":"1.2.0","linux":{"namespaces":[{"type":"pid"}]}}`

func TestAdaptBundleDoesNotWriteThroughAPlantedLink(t *testing.T) {
	bundle, _ := writeBundle(t, specWithCgroup, 0o644)
	victim, content := plantVictim(t)
	link := filepath.Join(bundle, oldTempName)
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	if _, err := AdaptBundle(bundle, dropCgroup); err != nil {
		t.Fatalf("AdaptBundle: %v", err)
	}
	assertPlantedLinkIgnored(t, bundle, link, victim, content, specWithoutCgroup)
	if got := bundleFiles(t, bundle); !reflect.DeepEqual(got, []string{"config.json", oldTempName}) {
		t.Errorf("bundle holds %q, want config.json and the planted link", got)
	}
}

// fixedTempRandom makes every temporary name the same, and counts the draws.
func fixedTempRandom(t *testing.T, r uint64) *int {
	draws := new(int)
	old := tempRandom
	tempRandom = func() uint64 { *draws++; return r }
	t.Cleanup(func() { tempRandom = old })
	return draws
}

// Whatever is at the name drawn first (a link, a stale leftover, a
// directory) is left alone, and the next name is used.
func TestAdaptBundleTakesAnotherTemporaryNameWhenOneIsTaken(t *testing.T) {
	for _, planted := range []string{"link", "dangling link", "stale file", "directory"} {
		t.Run(planted, func(t *testing.T) {
			bundle, path := writeBundle(t, specWithCgroup, 0o640)
			victim, content := plantVictim(t)
			taken := tempName(path, 1)
			var err error
			switch planted {
			case "link":
				err = os.Symlink(victim, taken)
			case "dangling link":
				err = os.Symlink(filepath.Join(t.TempDir(), "gone"), taken)
			case "stale file":
				err = os.WriteFile(taken, []byte(`{"half":`), 0o644)
			case "directory":
				err = os.Mkdir(taken, 0o755)
			}
			if err != nil {
				t.Fatal(err)
			}
			next := uint64(0)
			old := tempRandom
			tempRandom = func() uint64 { next++; return next }
			t.Cleanup(func() { tempRandom = old })

			if _, err := AdaptBundle(bundle, dropCgroup); err != nil {
				t.Fatalf("AdaptBundle: %v", err)
			}
			if next != 2 {
				t.Errorf("%d names drawn, want 2", next)
			}
			if got, _ := os.ReadFile(path); string(got) != specWithoutCgroup {
				t.Errorf("config.json = %s", got)
			}
			if info, _ := os.Lstat(path); !info.Mode().IsRegular() || info.Mode().Perm() != 0o640 {
				t.Errorf("config.json mode %v, want a regular file 0640", info.Mode())
			}
			if got, _ := os.ReadFile(victim); string(got) != content {
				t.Errorf("victim written: %q", got)
			}
			if _, err := os.Lstat(taken); err != nil {
				t.Errorf("what was planted at the first name is gone: %v", err)
			}
			if got := bundleFiles(t, bundle); !reflect.DeepEqual(got, []string{"config.json", filepath.Base(taken)}) {
				t.Errorf("bundle holds %q", got)
			}
		})
	}
}

func TestTempNamesAreFreshAndBesideConfigJSON(t *testing.T) {
	path := filepath.Join("/run/b", "config.json")
	a, b := tempName(path, tempRandom()), tempName(path, tempRandom())
	if a == b {
		t.Errorf("two draws gave the same name %s", a)
	}
	if filepath.Dir(a) != "/run/b" || !strings.HasPrefix(filepath.Base(a), "config.json.runc-gvisor-") ||
		!strings.HasSuffix(a, ".tmp") || len(filepath.Base(a)) != len("config.json.runc-gvisor-0123456789abcdef.tmp") {
		t.Errorf("temporary name %s", a)
	}
	if filepath.Base(a) == oldTempName {
		t.Error("the old fixed name")
	}
}

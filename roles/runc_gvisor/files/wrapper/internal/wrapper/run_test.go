// SPDX-License-Identifier: Apache-2.0

package wrapper

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// harness runs the wrapper with a profile in a temporary directory and an
// Exec that records instead of replacing the test process.
type harness struct {
	t              *testing.T
	dir, runc, log string
	stdout, stderr bytes.Buffer
	execs          [][]string
	execErr        error
}

func newHarness(t *testing.T, adaptations ...string) *harness {
	h := &harness{t: t, dir: t.TempDir()}
	h.runc = filepath.Join(h.dir, "runc")
	h.log = filepath.Join(h.dir, "log.json")
	if err := os.WriteFile(h.runc, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	h.writeProfile(Profile{Runc: h.runc, Adaptations: adaptations})
	return h
}

func (h *harness) writeProfile(p Profile) {
	path := filepath.Join(h.dir, "profile.json")
	data, _ := json.Marshal(p)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		h.t.Fatal(err)
	}
	h.t.Setenv(ProfileEnv, path)
}

func (h *harness) run(args ...string) int {
	w := Wrapper{
		Build:  Build{DefaultProfilePath: "/nonexistent/profile.json", Version: "test"},
		Stdout: &h.stdout, Stderr: &h.stderr,
		Exec: func(path string, argv []string, env []string) error {
			if path != argv[0] {
				h.t.Errorf("exec path %s but argv[0] %s", path, argv[0])
			}
			h.execs = append(h.execs, argv)
			return h.execErr
		},
		Now: func() time.Time { return logTime },
	}
	return w.Run(append([]string{"runc-gvisor"}, args...))
}

func (h *harness) bundle(config string) string {
	bundle := filepath.Join(h.dir, "bundle")
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(config), 0o644); err != nil {
		h.t.Fatal(err)
	}
	return bundle
}

func (h *harness) config(bundle string) string {
	data, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
	return string(data)
}

func (h *harness) logLines() []string {
	data, err := os.ReadFile(h.log)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

func (h *harness) shimArgs(sub string, rest ...string) []string {
	return append([]string{"--root", "/run/containerd/runc/k8s.io", "--log", h.log, "--log-format", "json", sub}, rest...)
}

// exitedWith checks the exit code, that stdout (which the shim parses) is
// empty, and that the real runc was exec'd when and only when the code is 0.
func (h *harness) exitedWith(code, want int) {
	h.t.Helper()
	if code != want {
		h.t.Fatalf("exit code %d, want %d (stderr %q)", code, want, h.stderr.String())
	}
	if h.stdout.Len() != 0 {
		h.t.Errorf("wrote to stdout: %q", h.stdout.String())
	}
	if (len(h.execs) == 1) != (want == 0) {
		h.t.Errorf("execs = %v", h.execs)
	}
}

func TestPassthroughExecsTheRealRuncWithTheSameArgs(t *testing.T) {
	for _, args := range [][]string{
		{"state", "ctr"},
		{"--root", "/r", "--log", "/l", "--log-format", "json", "kill", "ctr", "9"},
		{"--version"},
		{"features"},
		{"delete", "--force", "ctr"},
		{"exec", "--process", "/tmp/p.json", "--detach", "--pid-file", "/p", "ctr"},
	} {
		h := newHarness(t, DropCgroupNamespace, "a-name-from-a-newer-role")
		h.exitedWith(h.run(args...), 0)
		if want := append([]string{h.runc}, args...); !reflect.DeepEqual(h.execs[0], want) {
			t.Errorf("exec %v, want %v", h.execs[0], want)
		}
	}
}

func TestPassthroughDoesNotReadTheBundle(t *testing.T) {
	h := newHarness(t, DropCgroupNamespace)
	bundle := h.bundle(`{"linux":`) // broken: would fail create
	chdir(t, bundle)
	h.exitedWith(h.run(h.shimArgs("start", "ctr")...), 0)
	h.exitedWithNoLog()
}

// chdir changes the working directory for one test (t.Chdir needs Go 1.24).
func chdir(t *testing.T, dir string) {
	t.Helper()
	old, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chdir(old) })
}

func (h *harness) exitedWithNoLog() {
	h.t.Helper()
	if lines := h.logLines(); lines != nil {
		h.t.Errorf("log written: %q", lines)
	}
}

func TestCreateAdaptsAndLogsOnce(t *testing.T) {
	h := newHarness(t, DropCgroupNamespace, RefusePidNamespaceJoin)
	bundle := h.bundle(specWithCgroup)
	args := h.shimArgs("create", "--bundle", bundle, "--pid-file", bundle+"/init.pid", "ctr")
	h.exitedWith(h.run(args...), 0)
	if want := append([]string{h.runc}, args...); !reflect.DeepEqual(h.execs[0], want) {
		t.Errorf("exec %v, want %v", h.execs[0], want)
	}
	if got := h.config(bundle); strings.Contains(got, "cgroup") {
		t.Errorf("config.json still has the cgroup namespace: %s", got)
	}
	want := []string{`{"level":"info","msg":"runc-gvisor: adapted spec: dropped cgroup namespace (B1)","time":"2024-07-29T12:30:45.123456789Z"}`}
	if got := h.logLines(); !reflect.DeepEqual(got, want) {
		t.Errorf("log = %q", got)
	}
	// The same container created again (a retry) logs nothing more.
	h.execs = nil
	h.exitedWith(h.run(args...), 0)
	if got := h.logLines(); len(got) != 1 {
		t.Errorf("log = %q", got)
	}
}

func TestRunInTheWorkingDirectoryWithATextLog(t *testing.T) {
	h := newHarness(t, DropCgroupNamespace)
	bundle := h.bundle(specWithCgroup)
	chdir(t, bundle)
	h.exitedWith(h.run("--log", h.log, "run", "ctr"), 0)
	if strings.Contains(h.config(bundle), "cgroup") {
		t.Error("config.json in the working directory was not adapted")
	}
	want := []string{`time="2024-07-29T12:30:45.123456789Z" level=info msg="runc-gvisor: adapted spec: dropped cgroup namespace (B1)"`}
	if got := h.logLines(); !reflect.DeepEqual(got, want) {
		t.Errorf("log = %q", got)
	}
}

func TestCreateWithNothingToChangeLogsNothing(t *testing.T) {
	h := newHarness(t, DropCgroupNamespace)
	bundle := h.bundle(`{"linux":{"namespaces":[{"type":"pid"}]}}`)
	h.exitedWith(h.run(h.shimArgs("create", "--bundle", bundle, "ctr")...), 0)
	h.exitedWithNoLog()
}

func TestCreateErrorsAreReportedLikeRuncs(t *testing.T) {
	const broken = `{"linux":{"namespaces":[{"type":"cgroup"}]`
	const join = `{"linux":{"namespaces":[{"type":"pid","path":"/proc/9/ns/pid"}]}}`
	const nestedMask = `{"linux":{"namespaces":[{"type":"cgroup"}],"maskedPaths":["/proc/kcore","/proc/sys/kernel"],"readonlyPaths":["/proc/bus","/proc/sys"]}}`
	const ownNetwork = `{"linux":{"namespaces":[{"type":"pid"},{"type":"network"}]}}`
	tests := []struct {
		name        string
		adaptations []string
		config      string // "" means no bundle at all
		wantMsg     string // {bundle} stands for the bundle's path
	}{
		{"invalid JSON", []string{DropCgroupNamespace}, broken, "runc-gvisor: {bundle}/config.json: invalid JSON at offset 42: unexpected end of JSON input"},
		{"missing bundle", []string{DropCgroupNamespace}, "", "runc-gvisor: {bundle}/config.json: bundle directory {bundle}: stat: no such file or directory"},
		{"B9", []string{DropCgroupNamespace, RefusePidNamespaceJoin}, join, "runc-gvisor: {bundle}/config.json: " + B9Error{"/proc/9/ns/pid"}.Error()},
		{"B14", []string{DropCgroupNamespace, RefuseMaskedUnderReadonly}, nestedMask, "runc-gvisor: {bundle}/config.json: " + B14Error{"/proc/sys/kernel", "/proc/sys"}.Error()},
		{"B22", []string{DropCgroupNamespace, RefuseNewNetworkNamespace}, ownNetwork, "runc-gvisor: {bundle}/config.json: " + B22Error{}.Error()},
		{"unknown adaptation", []string{"drop_everything"}, specWithCgroup, `runc-gvisor: host profile: unknown adaptation "drop_everything" (this runc-gvisor knows [drop_cgroup_namespace pid_namespace_per_container refuse_masked_under_readonly refuse_new_network_namespace refuse_pid_namespace_join])`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.adaptations...)
			bundle := filepath.Join(h.dir, "bundle")
			if tt.config != "" {
				h.bundle(tt.config)
			}
			h.exitedWith(h.run(h.shimArgs("create", "--bundle", bundle, "ctr")...), 1)
			h.reported(strings.ReplaceAll(tt.wantMsg, "{bundle}", bundle))
			if tt.config != "" && h.config(bundle) != tt.config {
				t.Errorf("config.json changed to %s", h.config(bundle))
			}
		})
	}
}

// reported checks that msg went to stderr and, as runc's JSON log line of
// level error, to the --log file.
func (h *harness) reported(msg string) {
	h.t.Helper()
	if got := strings.TrimSuffix(h.stderr.String(), "\n"); got != msg {
		h.t.Errorf("stderr\n got %s\nwant %s", got, msg)
	}
	want := []string{strings.TrimSuffix(string(LogLine("json", "error", msg, logTime)), "\n")}
	if got := h.logLines(); !reflect.DeepEqual(got, want) {
		h.t.Errorf("log\n got %q\nwant %q", got, want)
	}
}

func TestAnUnwritableLogDoesNotFailTheContainer(t *testing.T) {
	h := newHarness(t, DropCgroupNamespace)
	h.log = t.TempDir() // a directory cannot be appended to
	bundle := h.bundle(specWithCgroup)
	if code := h.run(h.shimArgs("create", "--bundle", bundle, "ctr")...); code != 0 || len(h.execs) != 1 {
		t.Fatalf("exit %d, execs %v", code, h.execs)
	}
	if !strings.HasPrefix(h.stderr.String(), "runc-gvisor: cannot write to --log "+h.log+": ") {
		t.Errorf("stderr %q", h.stderr.String())
	}
}

func TestProfileProblems(t *testing.T) {
	t.Run("missing profile fails every call", func(t *testing.T) {
		h := newHarness(t)
		missing := filepath.Join(h.dir, "nope.json")
		t.Setenv(ProfileEnv, missing)
		h.exitedWith(h.run(h.shimArgs("state", "ctr")...), 1)
		h.reported("runc-gvisor: host profile " + missing + ": open: no such file or directory")
	})
	t.Run("profile not JSON", func(t *testing.T) {
		h := newHarness(t)
		path := filepath.Join(h.dir, "bad.json")
		os.WriteFile(path, []byte(`{"runc": `), 0o644)
		t.Setenv(ProfileEnv, path)
		h.exitedWith(h.run(h.shimArgs("state", "ctr")...), 1)
		h.reported("runc-gvisor: host profile " + path + ": invalid JSON at offset 9: unexpected end of JSON input")
	})
	t.Run("relative runc", func(t *testing.T) {
		h := newHarness(t)
		h.writeProfile(Profile{Runc: "runc"})
		h.exitedWith(h.run(h.shimArgs("state", "ctr")...), 1)
		if !strings.Contains(h.stderr.String(), `"runc" must be the absolute path of the real runc, got "runc"`) {
			t.Errorf("stderr %q", h.stderr.String())
		}
	})
	t.Run("missing real runc leaves config.json untouched", func(t *testing.T) {
		h := newHarness(t, DropCgroupNamespace)
		gone := filepath.Join(h.dir, "gone", "runc")
		h.writeProfile(Profile{Runc: gone, Adaptations: []string{DropCgroupNamespace}})
		bundle := h.bundle(specWithCgroup)
		h.exitedWith(h.run(h.shimArgs("create", "--bundle", bundle, "ctr")...), 1)
		h.reported("runc-gvisor: real runc " + gone + " (from host profile " + os.Getenv(ProfileEnv) + "): no such file or directory")
		if h.config(bundle) != specWithCgroup {
			t.Error("config.json changed")
		}
	})
	t.Run("exec failure", func(t *testing.T) {
		h := newHarness(t)
		h.execErr = syscall.ENOEXEC
		if code := h.run(h.shimArgs("kill", "ctr", "9")...); code != 1 {
			t.Fatalf("exit %d", code)
		}
		h.reported("runc-gvisor: real runc " + h.runc + " (from host profile " + os.Getenv(ProfileEnv) + "): exec format error")
	})
	t.Run("build default when the env is unset", func(t *testing.T) {
		t.Setenv(ProfileEnv, "")
		if got := ProfilePath("/etc/runc-gvisor/profile.json"); got != "/etc/runc-gvisor/profile.json" {
			t.Errorf("ProfilePath = %s", got)
		}
	})
}

func TestInfo(t *testing.T) {
	h := newHarness(t, DropCgroupNamespace)
	if code := h.run(InfoFlag); code != 0 {
		t.Fatalf("exit %d: %s", code, h.stdout.String())
	}
	var info Info
	if err := json.Unmarshal(h.stdout.Bytes(), &info); err != nil {
		t.Fatal(err)
	}
	if info.Profile == nil || info.Profile.Runc != h.runc || !info.RuncExecutable || info.Version != "test" || len(info.Errors) != 0 {
		t.Errorf("info = %+v", info)
	}
	if len(h.execs) != 0 {
		t.Error("--runc-gvisor-info ran runc")
	}

	h = newHarness(t, "bogus")
	if code := h.run(InfoFlag); code != 1 || !strings.Contains(h.stdout.String(), `unknown adaptation \"bogus\"`) {
		t.Errorf("exit %d: %s", code, h.stdout.String())
	}
}

// The same through a whole create, as the shim calls it.
func TestCreateDoesNotWriteThroughAPlantedLink(t *testing.T) {
	h := newHarness(t, DropCgroupNamespace)
	bundle := h.bundle(specWithCgroup)
	victim, content := plantVictim(t)
	link := filepath.Join(bundle, oldTempName)
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	h.exitedWith(h.run(h.shimArgs("create", "--bundle", bundle, "ctr")...), 0)
	assertPlantedLinkIgnored(t, bundle, link, victim, content, specWithoutCgroup)
}

// B14 is refused by create and run alike, before the real runc, with the
// spec untouched; the other subcommands never read the spec.
func TestMaskedUnderReadonlyIsRefusedByCreateAndRun(t *testing.T) {
	const nested = `{"linux":{"maskedPaths":["/proc/kcore","/proc/sys/kernel/"],"readonlyPaths":["/proc/sysrq-trigger","/proc/sys"],"namespaces":[{"type":"cgroup"}]}}`
	for _, sub := range []string{"create", "run"} {
		t.Run(sub, func(t *testing.T) {
			h := newHarness(t, DropCgroupNamespace, RefusePidNamespaceJoin, RefuseMaskedUnderReadonly)
			bundle := h.bundle(nested)
			h.exitedWith(h.run(h.shimArgs(sub, "--bundle", bundle, "ctr")...), 1)
			h.reported("runc-gvisor: " + filepath.Join(bundle, "config.json") + ": " + B14Error{"/proc/sys/kernel/", "/proc/sys"}.Error())
			if !strings.Contains(h.stderr.String(), ": blocker B14: ") {
				t.Errorf("stderr %q", h.stderr.String())
			}
			if h.config(bundle) != nested {
				t.Errorf("config.json changed to %s", h.config(bundle))
			}
			assertNoTempFile(t, bundle)
		})
	}
	for _, sub := range []string{"start", "state", "delete"} {
		h := newHarness(t, RefuseMaskedUnderReadonly)
		chdir(t, h.bundle(nested))
		h.exitedWith(h.run(h.shimArgs(sub, "ctr")...), 0)
	}
}

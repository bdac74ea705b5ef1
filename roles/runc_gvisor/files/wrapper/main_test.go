// SPDX-License-Identifier: Apache-2.0

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The test binary plays runc-gvisor itself when asked, so these tests go
// through the real syscall.Exec into a fake runc.
func TestMain(m *testing.M) {
	if os.Getenv("RUNC_GVISOR_TEST_AS_MAIN") == "1" {
		main()
	}
	os.Exit(m.Run())
}

func runAsMain(t *testing.T, profile string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "RUNC_GVISOR_TEST_AS_MAIN=1", "RUNC_GVISOR_PROFILE="+profile)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if exitErr, ok := err.(*exec.ExitError); ok {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// fakeRunc writes a script that prints its arguments, one per line, and
// exits with the status runc would.
func fakeRunc(t *testing.T, dir string) string {
	path := filepath.Join(dir, "runc")
	script := "#!/bin/sh\nfor a in \"$0\" \"$@\"; do echo \"$a\"; done\nexit 3\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeFile(t *testing.T, path, content string) {
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestExecsTheRealRunc(t *testing.T) {
	dir := t.TempDir()
	runc := fakeRunc(t, dir)
	profile := filepath.Join(dir, "profile.json")
	writeFile(t, profile, `{"runc": "`+runc+`", "adaptations": ["drop_cgroup_namespace"]}`)
	bundle := filepath.Join(dir, "bundle")
	os.Mkdir(bundle, 0o755)
	writeFile(t, filepath.Join(bundle, "config.json"), `{"linux":{"namespaces":[{"type":"cgroup"},{"type":"pid"}]}}`)
	log := filepath.Join(dir, "log.json")

	for _, args := range [][]string{
		{"--root", "/run/r", "--log", log, "--log-format", "json", "state", "ctr"},
		{"--root", "/run/r", "--log", log, "--log-format", "json", "create", "--bundle", bundle, "ctr"},
	} {
		stdout, stderr, code := runAsMain(t, profile, args...)
		if want := strings.Join(append([]string{runc}, args...), "\n") + "\n"; stdout != want || code != 3 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
	config, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
	if string(config) != `{"linux":{"namespaces":[{"type":"pid"}]}}` {
		t.Errorf("config.json = %s", config)
	}
	if logged, _ := os.ReadFile(log); !strings.Contains(string(logged), `"msg":"runc-gvisor: adapted spec: dropped cgroup namespace (B1)"`) {
		t.Errorf("log = %s", logged)
	}
}

func TestMissingRealRunc(t *testing.T) {
	dir := t.TempDir()
	profile := filepath.Join(dir, "profile.json")
	writeFile(t, profile, `{"runc": "/nonexistent/runc", "adaptations": []}`)
	stdout, stderr, code := runAsMain(t, profile, "kill", "ctr", "9")
	want := "runc-gvisor: real runc /nonexistent/runc (from host profile " + profile + "): no such file or directory\n"
	if code != 1 || stdout != "" || stderr != want {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// SPDX-License-Identifier: Apache-2.0

package wrapper

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func writeProfileFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "profile.json")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadProfile(t *testing.T) {
	path := writeProfileFile(t, `{"runc": "/usr/local/lib/runc-gvisor/runc", "adaptations": ["drop_cgroup_namespace", "refuse_pid_namespace_join"], "written_by": "ansible"}`)
	p, err := LoadProfile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := Profile{Runc: "/usr/local/lib/runc-gvisor/runc", Adaptations: []string{DropCgroupNamespace, RefusePidNamespaceJoin}}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("profile = %+v", p)
	}
	a, err := p.ParseAdaptations()
	if err != nil || a != (Adaptations{DropCgroupNamespace: true, RefusePidNamespaceJoin: true}) {
		t.Errorf("adaptations = %+v, %v", a, err)
	}
}

func TestLoadProfileErrors(t *testing.T) {
	tests := []struct{ name, content, wantErr string }{
		{"empty", ``, "invalid JSON at offset 0: unexpected end of JSON input"},
		{"not JSON", `runc=/usr/bin/runc`, "invalid JSON at offset 1: invalid character 'r' looking for beginning of value"},
		{"runc not a string", `{"runc": 1}`, "cannot unmarshal number"},
		{"no runc", `{"adaptations": []}`, `"runc" must be the absolute path of the real runc, got ""`},
		{"relative runc", `{"runc": "bin/runc"}`, `got "bin/runc"`},
		{"too large", `{"runc": "/r", "pad": "` + strings.Repeat("x", maxProfileSize) + `"}`, "larger than 4096 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeProfileFile(t, tt.content)
			_, err := LoadProfile(path)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "host profile "+path+": ") {
				t.Errorf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
	t.Run("a directory", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := LoadProfile(dir); err == nil || err.Error() != "host profile "+dir+": read: is a directory" {
			t.Errorf("err = %v", err)
		}
	})
}

func TestReadSmallFileAtTheLimit(t *testing.T) {
	exact := writeProfileFile(t, strings.Repeat("x", maxProfileSize))
	if data, err := readSmallFile(exact, maxProfileSize); err != nil || len(data) != maxProfileSize {
		t.Errorf("%d bytes, %v", len(data), err)
	}
}

func TestParseAdaptationsRejectsUnknownNames(t *testing.T) {
	_, err := Profile{Runc: "/r", Adaptations: []string{DropCgroupNamespace, "drop_cgroup_namespaces"}}.ParseAdaptations()
	if err == nil || !strings.Contains(err.Error(), `unknown adaptation "drop_cgroup_namespaces"`) {
		t.Errorf("err = %v", err)
	}
}

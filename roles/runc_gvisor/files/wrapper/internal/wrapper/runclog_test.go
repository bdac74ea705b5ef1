// SPDX-License-Identifier: Apache-2.0

package wrapper

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var logTime = time.Date(2024, 7, 29, 12, 30, 45, 123456789, time.UTC)

func TestLogLine(t *testing.T) {
	tests := []struct{ format, level, msg, want string }{
		{"json", "error", `runc-gvisor: /b/config.json: invalid JSON at offset 3: invalid character '"' after object key`,
			`{"level":"error","msg":"runc-gvisor: /b/config.json: invalid JSON at offset 3: invalid character '\"' after object key","time":"2024-07-29T12:30:45.123456789Z"}` + "\n"},
		{"json", "info", "runc-gvisor: adapted spec: dropped cgroup namespace (B1)",
			`{"level":"info","msg":"runc-gvisor: adapted spec: dropped cgroup namespace (B1)","time":"2024-07-29T12:30:45.123456789Z"}` + "\n"},
		{"text", "info", "runc-gvisor: adapted spec: dropped cgroup namespace (B1)",
			`time="2024-07-29T12:30:45.123456789Z" level=info msg="runc-gvisor: adapted spec: dropped cgroup namespace (B1)"` + "\n"},
		{"", "error", "a \"quoted\"\nline",
			`time="2024-07-29T12:30:45.123456789Z" level=error msg="a \"quoted\"\nline"` + "\n"},
	}
	for _, tt := range tests {
		if got := string(LogLine(tt.format, tt.level, tt.msg, logTime)); got != tt.want {
			t.Errorf("LogLine(%q, %q)\n got %s\nwant %s", tt.format, tt.level, got, tt.want)
		}
	}
}

// containerd's shim decodes each line of log.json into level/msg/time.
func TestLogLineIsWhatTheShimDecodes(t *testing.T) {
	var entry struct {
		Level string    `json:"level"`
		Msg   string    `json:"msg"`
		Time  time.Time `json:"time"`
	}
	if err := json.Unmarshal(LogLine("json", "error", "boom <&>", logTime), &entry); err != nil {
		t.Fatal(err)
	}
	if entry.Level != "error" || entry.Msg != "boom <&>" || !entry.Time.Equal(logTime) {
		t.Errorf("decoded %+v", entry)
	}
}

func TestAppendLogAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.json")
	if err := os.WriteFile(path, []byte("{\"level\":\"info\",\"msg\":\"runc's own\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := appendLog(path, []byte("second\n")); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if string(got) != "{\"level\":\"info\",\"msg\":\"runc's own\"}\nsecond\n" {
		t.Errorf("log = %q", got)
	}
}

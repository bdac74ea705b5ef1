package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func call(env map[string]string, stdin string) (int, map[string]interface{}) {
	var out bytes.Buffer
	code := run(func(k string) string { return env[k] }, strings.NewReader(stdin), &out)
	var printed map[string]interface{}
	if err := json.Unmarshal(out.Bytes(), &printed); err != nil {
		panic("stdout is not JSON: " + out.String())
	}
	return code, printed
}

func TestVersionAnswersWithTheSupportedVersions(t *testing.T) {
	code, out := call(map[string]string{"CNI_COMMAND": "VERSION"}, `{"cniVersion":"1.0.0"}`)
	if code != 0 || out["cniVersion"] != "1.0.0" {
		t.Fatalf("exit %d, %v", code, out)
	}
	versions, _ := json.Marshal(out["supportedVersions"])
	if string(versions) != `["0.4.0","1.0.0"]` {
		t.Fatalf("supportedVersions %s", versions)
	}
}

func TestErrorsAreCNIErrorsOnStdout(t *testing.T) {
	code, out := call(map[string]string{}, "")
	if code != 1 || out["code"].(float64) != 4 || !strings.Contains(out["msg"].(string), "CNI_COMMAND is not set") {
		t.Fatalf("exit %d, %v", code, out)
	}
	env := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/c1",
		"CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent"}
	code, out = call(env, `{"cniVersion":"0.4.0","name":"pods","ipam":{}}`)
	if code != 1 || out["code"].(float64) != 7 || out["cniVersion"] != "1.0.0" {
		t.Fatalf("exit %d, %v", code, out)
	}
	// Past config parsing an error carries the config's version.
	code, out = call(env, `{"cniVersion":"0.4.0","name":"pods","ipam":{"type":"host-local"}}`)
	if code != 1 || out["cniVersion"] != "0.4.0" || !strings.Contains(out["msg"].(string), "not in CNI_PATH") {
		t.Fatalf("exit %d, %v", code, out)
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain lets a test run the plugin's main() in a child process (the
// test binary itself), the way a runtime runs the plugin: CNI_* in the
// environment, the config on stdin, the answer on stdout.
func TestMain(m *testing.M) {
	if os.Getenv("GVB_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runPlugin(t *testing.T, env map[string]string, stdin string, args ...string) (int, map[string]any, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = []string{"GVB_RUN_MAIN=1"}
	for key, value := range env {
		cmd.Env = append(cmd.Env, key+"="+value)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if exitErr, ok := err.(*exec.ExitError); ok {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var printed map[string]any
	if len(args) == 0 && stdout.Len() > 0 {
		if err := json.Unmarshal(stdout.Bytes(), &printed); err != nil {
			t.Fatalf("stdout is not JSON: %q", stdout.String())
		}
	}
	return code, printed, stdout.String() + stderr.String()
}

func TestVersionAnswersWithTheSupportedVersions(t *testing.T) {
	code, out, _ := runPlugin(t, map[string]string{"CNI_COMMAND": "VERSION"}, `{"cniVersion":"1.0.0"}`)
	versions, _ := json.Marshal(out["supportedVersions"])
	if code != 0 || string(versions) != `["0.4.0","1.0.0"]` {
		t.Fatalf("exit %d, %v", code, out)
	}
}

func TestVersionFlagNamesTheBuildAndTheSpecVersions(t *testing.T) {
	code, _, printed := runPlugin(t, nil, "", "--version")
	if code != 0 || printed != "gvisor-bridge dev, CNI spec versions 0.4.0, 1.0.0\n" {
		t.Fatalf("exit %d, %q", code, printed)
	}
}

var addEnv = map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/nonexistent/netns",
	"CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent"}

func TestErrorsAreCNIErrorsOnStdout(t *testing.T) {
	code, out, _ := runPlugin(t, map[string]string{"CNI_COMMAND": "ADD"}, "")
	if code != 1 || out["code"].(float64) != 4 || !strings.Contains(out["msg"].(string), "CNI_CONTAINERID") {
		t.Fatalf("exit %d, %v", code, out)
	}
	code, out, _ = runPlugin(t, addEnv, `{"cniVersion":"0.3.1","name":"pods","ipam":{"type":"host-local"}}`)
	if code != 1 || out["code"].(float64) != 1 || !strings.Contains(out["details"].(string), `plugin supports ["0.4.0" "1.0.0"]`) {
		t.Fatalf("exit %d, %v", code, out)
	}
	code, out, _ = runPlugin(t, addEnv, `{"cniVersion":"0.4.0","name":"pods","ipam":{"type":"dhcp"}}`)
	if code != 1 || out["code"].(float64) != 7 || !strings.Contains(out["msg"].(string), `ipam.type "dhcp" is not supported`) {
		t.Fatalf("exit %d, %v", code, out)
	}
}

func TestAddForAMissingNamespaceReservesNothing(t *testing.T) {
	dir := t.TempDir()
	conf := `{"cniVersion":"1.0.0","name":"pods","ipam":{"type":"host-local","dataDir":"` + dir + `","ranges":[[{"subnet":"10.42.0.0/24"}]]}}`
	code, out, _ := runPlugin(t, addEnv, conf)
	if code != 1 || out["code"].(float64) != 5 || !strings.Contains(out["msg"].(string), "/nonexistent/netns") {
		t.Fatalf("exit %d, %v", code, out)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the failed ADD left %v in the IPAM directory", entries)
	}
}

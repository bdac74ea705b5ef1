package cni

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Delegate runs the IPAM plugin named by the configuration, found in
// CNI_PATH, the way a runtime runs a plugin: the same environment with
// CNI_COMMAND set to command, the same configuration on stdin. Its locking
// (host-local's flock on its data directory) therefore holds across every
// concurrent ADD and DEL. It returns the plugin's stdout.
func Delegate(env Env, plugin, command string, conf []byte) ([]byte, error) {
	binary, err := findPlugin(plugin, env.Path)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary)
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+command)
	cmd.Stdin = bytes.NewReader(conf)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, delegateError(plugin, command, err, stdout.Bytes())
	}
	return stdout.Bytes(), nil
}

func findPlugin(plugin, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		candidate := filepath.Join(dir, plugin)
		if info, err := os.Stat(candidate); err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0 {
			return candidate, nil
		}
	}
	return "", Errorf(CodeInvalidConfig, "IPAM plugin %q is not in CNI_PATH %q", plugin, path)
}

// delegateError keeps the IPAM plugin's own CNI error (code and message).
func delegateError(plugin, command string, runErr error, stdout []byte) error {
	var pluginErr Error
	if json.Unmarshal(stdout, &pluginErr) == nil && pluginErr.Msg != "" {
		pluginErr.Msg = fmt.Sprintf("IPAM plugin %s %s: %s", plugin, command, pluginErr.Msg)
		return &pluginErr
	}
	return Errorf(CodeIOFailure, "IPAM plugin %s %s: %v (stdout: %q)", plugin, command, runErr, bytes.TrimSpace(stdout))
}

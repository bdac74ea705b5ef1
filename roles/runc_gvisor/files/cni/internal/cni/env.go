package cni

import (
	"fmt"
	"strings"
)

// Env is the CNI_* environment of one call.
type Env struct {
	Command     string
	ContainerID string
	Netns       string
	IfName      string
	Path        string
}

// ReadEnv reads and checks the variables the command needs.
func ReadEnv(getenv func(string) string) (Env, error) {
	env := Env{
		Command:     getenv("CNI_COMMAND"),
		ContainerID: getenv("CNI_CONTAINERID"),
		Netns:       getenv("CNI_NETNS"),
		IfName:      getenv("CNI_IFNAME"),
		Path:        getenv("CNI_PATH"),
	}
	switch env.Command {
	case "VERSION":
		return env, nil
	case "ADD", "DEL", "CHECK":
	case "":
		return env, Errorf(CodeInvalidEnvironment, "CNI_COMMAND is not set: gvisor-bridge is a CNI plugin, run by a container runtime")
	default:
		return env, Errorf(CodeInvalidEnvironment, "CNI_COMMAND %q is not one of ADD, DEL, CHECK, VERSION", env.Command)
	}
	if err := validContainerID(env.ContainerID); err != nil {
		return env, Errorf(CodeInvalidEnvironment, "CNI_CONTAINERID: %v", err)
	}
	if err := validInterfaceName(env.IfName); err != nil {
		return env, Errorf(CodeInvalidEnvironment, "CNI_IFNAME: %v", err)
	}
	if env.Path == "" {
		return env, Errorf(CodeInvalidEnvironment, "CNI_PATH is not set: the IPAM plugin is looked up there")
	}
	// DEL may come after the namespace is gone: the host end of the veth is found without it.
	if env.Netns == "" && env.Command != "DEL" {
		return env, Errorf(CodeInvalidEnvironment, "CNI_NETNS is not set (%s needs the pod's network namespace)", env.Command)
	}
	return env, nil
}

// validContainerID applies the spec's rule: alphanumeric first, then
// alphanumerics, '_', '.' and '-'.
func validContainerID(id string) error {
	if id == "" {
		return fmt.Errorf("empty")
	}
	for i, c := range id {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune("_.-", c)) {
			return fmt.Errorf("%q has %q at byte %d (allowed: alphanumerics first, then also '_', '.', '-')", id, c, i)
		}
	}
	return nil
}

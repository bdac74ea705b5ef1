// Package cni is the CNI protocol as gvisor-bridge speaks it: the network
// configuration on stdin, the CNI_* environment, results and errors on
// stdout, and delegation to an IPAM plugin. Spec 1.0.0, and 0.4.0 configs.
package cni

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
)

// SupportedVersions are the spec versions whose configs are accepted; a
// result is written in the version of its config.
var SupportedVersions = []string{"0.4.0", "1.0.0"}

// Error codes from the CNI spec; 100 and up are the plugin's own.
const (
	CodeIncompatibleVersion = 1
	CodeInvalidEnvironment  = 4
	CodeIOFailure           = 5
	CodeDecodeFailure       = 6
	CodeInvalidConfig       = 7
	CodeStateDiffers        = 100
)

// Error is a CNI error: printed as JSON on stdout, the plugin exits 1.
type Error struct {
	CNIVersion string `json:"cniVersion"`
	Code       int    `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details,omitempty"`
}

func (e *Error) Error() string {
	if e.Details != "" {
		return e.Msg + ": " + e.Details
	}
	return e.Msg
}

// Errorf makes an Error with a code.
func Errorf(code int, format string, args ...interface{}) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// NetConf is the network configuration this plugin reads.
type NetConf struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	// Bridge is made when absent and gets each IPAM gateway address.
	Bridge string `json:"bridge"`
	// MTU of the veth pair and of a bridge this plugin makes; 0 leaves the default.
	MTU  int `json:"mtu"`
	IPAM struct {
		Type string `json:"type"`
	} `json:"ipam"`
	PrevResult json.RawMessage `json:"prevResult,omitempty"`
}

// DefaultBridge is the bridge's name when the config gives none.
const DefaultBridge = "gvbr0"

// ParseNetConf reads and checks a network configuration.
func ParseNetConf(data []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(data, conf); err != nil {
		return nil, Errorf(CodeDecodeFailure, "network configuration on stdin is not JSON: %v", err)
	}
	if !supported(conf.CNIVersion) {
		return nil, Errorf(CodeIncompatibleVersion, "network configuration %q has cniVersion %q; gvisor-bridge supports %s",
			conf.Name, conf.CNIVersion, strings.Join(SupportedVersions, ", "))
	}
	if conf.Bridge == "" {
		conf.Bridge = DefaultBridge
	}
	if err := validInterfaceName(conf.Bridge); err != nil {
		return nil, Errorf(CodeInvalidConfig, "network configuration %q: bridge: %v", conf.Name, err)
	}
	if conf.MTU < 0 || conf.MTU > 65535 {
		return nil, Errorf(CodeInvalidConfig, "network configuration %q: mtu %d is not between 0 and 65535", conf.Name, conf.MTU)
	}
	if conf.IPAM.Type == "" {
		return nil, Errorf(CodeInvalidConfig, "network configuration %q: ipam.type is missing (host-local, for instance)", conf.Name)
	}
	if strings.ContainsAny(conf.IPAM.Type, "/\\") || conf.IPAM.Type == "." || conf.IPAM.Type == ".." {
		return nil, Errorf(CodeInvalidConfig, "network configuration %q: ipam.type %q is not a plugin name", conf.Name, conf.IPAM.Type)
	}
	return conf, nil
}

func supported(version string) bool {
	for _, v := range SupportedVersions {
		if v == version {
			return true
		}
	}
	return false
}

// validInterfaceName applies the kernel's rules (dev_valid_name) and the
// spec's: at most 15 bytes, not . or .., no '/', ':' or whitespace.
func validInterfaceName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty interface name")
	case len(name) > 15:
		return fmt.Errorf("interface name %q is longer than 15 bytes", name)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is not allowed", name)
	case strings.ContainsAny(name, "/: \t\n\v\f\r"):
		return fmt.Errorf("interface name %q contains '/', ':' or whitespace", name)
	}
	return nil
}

// Interface, IPConfig, Route and Result are the result format; Version is
// written for 0.4.0 results only (1.0.0 dropped it).
type Interface struct {
	Name    string `json:"name"`
	Mac     string `json:"mac,omitempty"`
	Sandbox string `json:"sandbox,omitempty"`
}

type IPConfig struct {
	Version   string `json:"version,omitempty"`
	Interface *int   `json:"interface,omitempty"`
	Address   string `json:"address"`
	Gateway   string `json:"gateway,omitempty"`
}

type Route struct {
	Dst string `json:"dst"`
	GW  string `json:"gw,omitempty"`
}

type Result struct {
	CNIVersion string          `json:"cniVersion"`
	Interfaces []Interface     `json:"interfaces,omitempty"`
	IPs        []IPConfig      `json:"ips,omitempty"`
	Routes     []Route         `json:"routes,omitempty"`
	DNS        json.RawMessage `json:"dns,omitempty"`
}

// ParseResult reads a result (an IPAM plugin's, or a prevResult).
func ParseResult(data []byte) (*Result, error) {
	result := &Result{}
	if err := json.Unmarshal(data, result); err != nil {
		return nil, err
	}
	return result, nil
}

// Encode writes the result in version: 0.4.0 carries each IP's version.
func (r *Result) Encode(version string) ([]byte, error) {
	out := *r
	out.CNIVersion = version
	out.IPs = make([]IPConfig, len(r.IPs))
	for i, ip := range r.IPs {
		ip.Version = ""
		if version == "0.4.0" {
			ip.Version = "6"
			if addr, _, err := net.ParseCIDR(ip.Address); err == nil && addr.To4() != nil {
				ip.Version = "4"
			}
		}
		out.IPs[i] = ip
	}
	return json.Marshal(out)
}

// Address is one IPAM address, parsed: the pod's address with its prefix,
// and the gateway (the bridge's address).
type Address struct {
	IPNet   net.IPNet
	Gateway net.IP
}

// Addresses parses the result's IPs; each must have a gateway, which the
// bridge gets and the pod routes through.
func (r *Result) Addresses() ([]Address, error) {
	var out []Address
	for _, ip := range r.IPs {
		addr, subnet, err := net.ParseCIDR(ip.Address)
		if err != nil {
			return nil, fmt.Errorf("address %q: %v", ip.Address, err)
		}
		gateway := net.ParseIP(ip.Gateway)
		if gateway == nil {
			return nil, fmt.Errorf("address %s has no gateway (%q): set one in the IPAM range, or keep its default", ip.Address, ip.Gateway)
		}
		if !subnet.Contains(gateway) {
			return nil, fmt.Errorf("gateway %s of address %s is outside its subnet %s", gateway, ip.Address, subnet)
		}
		out = append(out, Address{IPNet: net.IPNet{IP: addr, Mask: subnet.Mask}, Gateway: gateway})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no addresses")
	}
	return out, nil
}

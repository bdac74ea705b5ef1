package main

import (
	"encoding/json"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
	cniversion "github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
)

// DefaultBridge is the bridge's name when the config gives none.
const DefaultBridge = "gvbr0"

// ipamType is the only IPAM this plugin does: host-local's allocator and
// store, linked in, so no IPAM binary needs to be installed.
const ipamType = "host-local"

// NetConf is the network configuration: the CNI fields (name, cniVersion,
// ipam.type, prevResult), the plugin's own, and the ipam section as
// host-local reads it.
type NetConf struct {
	types.NetConf
	// Bridge is made when absent and gets each gateway address.
	Bridge string `json:"bridge"`
	// MTU of the veth pair and of a bridge this plugin makes; 0 leaves
	// gVisor's default (1486).
	MTU int `json:"mtu"`

	ipam *allocator.IPAMConfig
}

// loadConf reads and checks the whole configuration, IPAM included, before
// anything is touched: a bad config changes no link and reserves nothing.
// envArgs is CNI_ARGS, where host-local takes a requested IP from.
func loadConf(stdin []byte, envArgs string) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "network configuration on stdin is not JSON: "+err.Error(), "")
	}
	if conf.Bridge == "" {
		conf.Bridge = DefaultBridge
	}
	if err := utils.ValidateInterfaceName(conf.Bridge); err != nil {
		return nil, configError("network configuration %q: bridge %q: %s", conf.Name, conf.Bridge, err.Error())
	}
	if conf.MTU < 0 || conf.MTU > 65535 {
		return nil, configError("network configuration %q: mtu %d is not between 0 and 65535", conf.Name, conf.MTU)
	}
	if err := checkIPAMType(conf); err != nil {
		return nil, err
	}
	if err := cniversion.ParsePrevResult(&conf.NetConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "prevResult: "+err.Error(), "")
	}
	ipam, _, err := allocator.LoadIPAMConfig(stdin, envArgs)
	if err != nil {
		return nil, configError("network configuration %q: ipam: %v", conf.Name, err)
	}
	conf.ipam = ipam
	return conf, nil
}

// checkIPAMType refuses any IPAM but host-local rather than run another
// plugin: running one is what made this plugin depend on an installed
// binary, and none but host-local has been tried on gVisor (dhcp, for one,
// needs raw sockets gVisor nodes do not have).
func checkIPAMType(conf *NetConf) error {
	switch conf.IPAM.Type {
	case ipamType:
		return nil
	case "":
		return configError("network configuration %q: ipam.type is missing (gvisor-bridge does %s)", conf.Name, ipamType)
	}
	return configError("network configuration %q: ipam.type %q is not supported: gvisor-bridge does %s IPAM itself (linked in) and runs no IPAM plugin",
		conf.Name, conf.IPAM.Type, ipamType)
}

module k3s-gvisor/gvisor-bridge

go 1.19

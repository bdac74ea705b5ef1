module k3s-gvisor/runc-gvisor

go 1.19

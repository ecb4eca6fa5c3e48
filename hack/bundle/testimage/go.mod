// nettest of kubeup's smoke-test image (built by `cargo xtask bundle`):
// TCP throughput and connect latency for hack/bench-network.sh.
module kubeup.dev/bundle/testimage

go 1.24.0

"""Development kit shared by the tests, the benchmarks and the demo (never shipped in the
wheel): real S3 servers on 127.0.0.1 (moto, Ceph RGW), an isolated offline terraform, the
Docker action's image built from local inputs, a stand-in release server, and the file
store's versioned-bucket tools (tamper and copy a trail)."""

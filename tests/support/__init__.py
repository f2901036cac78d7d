"""Helpers shared by the tests (and the benchmarks): real servers on 127.0.0.1, the
fault-injecting proxies, isolated terraform and tfaudit processes, and the CI runners."""

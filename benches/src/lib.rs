//! Benchmarks and the latency study live here.

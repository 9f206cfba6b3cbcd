"""Measurement: the load generator, the benchmark, the cold-start and broker-growth tools."""

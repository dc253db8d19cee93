"""Tests of the benchmarks' own protocol code (the load generator's checks)."""

"""Benchmarks and analysis commands; never imported by the library."""

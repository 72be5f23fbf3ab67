"""Benchmarks: each compares amihub with a raw baseline in the same run."""

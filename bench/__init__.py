"""Cost benchmark of the training objectives (`python -m bench.benchmark`, docs/benchmarks.md)."""

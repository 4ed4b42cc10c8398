"""Benchmarks of ntf_utils against baselines and earlier methods (not part of the package)."""

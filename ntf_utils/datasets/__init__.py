"""Datasets: shipped real subsets, a registry of downloadable sets, synthetic ground truth."""

__all__: list[str] = []

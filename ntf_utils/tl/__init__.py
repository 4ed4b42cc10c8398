"""Tools that compute: fit a field, baselines, evaluation, domains, gradients."""

__all__: list[str] = []

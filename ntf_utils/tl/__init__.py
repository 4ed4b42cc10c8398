"""Tools that compute: fit a field, baselines, evaluation, domains, gradients."""

from ._fit import fit

__all__: list[str] = ["fit"]

from ._baselines import (  # noqa: E402
    KNNBaseline,
    LinearInterpolationBaseline,
    NearestSectionBaseline,
    baseline_predict,
)
from ._evaluate import evaluate_sections, summarize_evaluation  # noqa: E402

__all__ += [
    "baseline_predict",
    "NearestSectionBaseline",
    "LinearInterpolationBaseline",
    "KNNBaseline",
    "evaluate_sections",
    "summarize_evaluation",
]

from ._conformal import FieldIntervals, prediction_intervals  # noqa: E402
from ._domains import domains  # noqa: E402
from ._gradients import gradients  # noqa: E402
from ._uncertainty import FieldUncertainty, uncertainty  # noqa: E402

__all__ += ["domains", "gradients", "uncertainty", "FieldUncertainty", "prediction_intervals", "FieldIntervals"]

from ..atlas import fit_atlas, render_to_zarr  # noqa: E402

__all__ += ["fit_atlas", "render_to_zarr"]

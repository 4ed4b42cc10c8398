"""The neural field: hash-grid encoding, network, configuration, training and the fit pipeline.

Most users need only :class:`~ntf_utils.NTFConfig` and :class:`~ntf_utils.NTFField` (re-exported at
the top level) and :func:`ntf_utils.tl.fit`. The names here are for those who build on the model:
a custom cell source (:class:`CellSource`) fitted by the same pipeline (:func:`fit_field`), the
encoding on its own (:class:`HashGridEncoding`), or the parts of the configuration.
"""

from ._accelerate import FastForward, accelerated_model, compile_available
from ._config import (
    EncodingConfig,
    NetworkConfig,
    NTFConfig,
    SelectionConfig,
    TrainingConfig,
    resolve_config,
)
from ._coords import CoordinateTransform, Sampling, measure_sampling
from ._field import NTFField
from ._hashgrid import HashGridEncoding, tcnn_available
from ._native import native_status
from ._network import FieldNetwork
from ._pipeline import FitPlan, fit_field, plan_fit, resolve_device
from ._poses import SectionPoses, apply_poses
from ._sources import AnnDataSource, CellSource, Survey
from ._train import InMemoryCells, TrainingCells, train
from ._volume import Volume

__all__ = [
    "AnnDataSource",
    "CellSource",
    "CoordinateTransform",
    "EncodingConfig",
    "FastForward",
    "FieldNetwork",
    "FitPlan",
    "HashGridEncoding",
    "InMemoryCells",
    "NTFConfig",
    "NTFField",
    "NetworkConfig",
    "Sampling",
    "SectionPoses",
    "SelectionConfig",
    "Survey",
    "TrainingCells",
    "TrainingConfig",
    "Volume",
    "accelerated_model",
    "apply_poses",
    "compile_available",
    "fit_field",
    "measure_sampling",
    "native_status",
    "plan_fit",
    "resolve_config",
    "resolve_device",
    "tcnn_available",
    "train",
]

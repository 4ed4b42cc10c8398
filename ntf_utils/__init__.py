"""ntf_utils: Neural Transcriptomic Fields from serial spatial-omics sections.

Namespaces follow scanpy: :mod:`ntf_utils.pp` (preprocess), :mod:`ntf_utils.tl`
(tools that compute), :mod:`ntf_utils.pl` (plots) and :mod:`ntf_utils.datasets`.
"""

from . import datasets, pl, pp, tl
from ._version import __version__
from .model._config import NTFConfig
from .model._field import NTFField
from .model._volume import Volume

__all__ = ["pp", "tl", "pl", "datasets", "NTFField", "NTFConfig", "Volume", "__version__"]

"""ntf_utils: Neural Transcriptomic Fields from serial spatial-omics sections.

Namespaces follow scanpy: :mod:`ntf_utils.pp` (preprocess), :mod:`ntf_utils.tl`
(tools that compute), :mod:`ntf_utils.pl` (plots) and :mod:`ntf_utils.datasets`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ntf_utils")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.1.0"

from . import datasets, pl, pp, tl  # noqa: E402
from .model.config import NTFConfig  # noqa: E402
from .model.field import NTFField  # noqa: E402

__all__ = ["pp", "tl", "pl", "datasets", "NTFField", "NTFConfig", "__version__"]

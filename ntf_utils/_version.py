"""The installed package version (a module of its own, so that any module can import it without
importing the package's namespaces)."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("ntf_utils")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.1.0"

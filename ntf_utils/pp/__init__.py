"""Preprocessing: stack serial sections, split them, align them, normalise values."""

from ._normalize import log_normalize

__all__: list[str] = []
__all__ += ["log_normalize"]

from ._align import align_sections  # noqa: E402

__all__ += ["align_sections"]

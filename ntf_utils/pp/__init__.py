"""Preprocessing: stack serial sections, split them, align them, normalise values."""

from ._normalize import log_normalize
from ._read import read_sections
from ._split import split_sections
from ._stack import stack_sections

__all__: list[str] = ["read_sections", "stack_sections", "split_sections"]
__all__ += ["log_normalize"]

from ._align import align_sections, alignment_score  # noqa: E402

__all__ += ["align_sections", "alignment_score"]

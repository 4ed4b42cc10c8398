"""Preprocessing: stack serial sections, split them, align them, normalise values."""

__all__: list[str] = []

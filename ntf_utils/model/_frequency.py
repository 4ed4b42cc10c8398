"""tiny-cuda-nn's ``"Frequency"`` encoding: sines and cosines of octave frequencies per input axis.

Concatenated with the hash grid (tcnn's ``"Composite"`` encoding) it gives the MLP a smooth,
global description of position next to the grid's local one. Between sparse sections the grid can
only interpolate piecewise-linearly (each grid cell along z spans a section gap); the few low
frequencies carry the slow, curved changes along z that a Fourier-feature MLP or a Gaussian process
captures there (docs/model.md, "A smooth component").
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["FrequencyEncoding"]


class FrequencyEncoding(nn.Module):
    """``[sin(2**k pi u_d), cos(2**k pi u_d)]`` for ``k < n_frequencies`` and every axis ``d``.

    Parameters
    ----------
    n_input_dims
        Input dimensions; inputs lie in the unit cube ``[0, 1]``.
    n_frequencies
        Octaves per axis; the output has ``2 * n_frequencies * n_input_dims`` columns, ordered
        axis-major then octave then (sin, cos) as in tiny-cuda-nn.
    """

    def __init__(self, n_input_dims: int, n_frequencies: int) -> None:
        super().__init__()
        self.n_input_dims = int(n_input_dims)
        self.n_frequencies = int(n_frequencies)
        scales = math.pi * 2.0 ** torch.arange(self.n_frequencies, dtype=torch.float64)
        self.register_buffer("scales", scales, persistent=False)

    @property
    def n_output_dims(self) -> int:
        """Width of the encoding: ``2 * n_frequencies * n_input_dims``."""
        return 2 * self.n_frequencies * self.n_input_dims

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``(n, n_output_dims)`` encoding of ``u`` ``(n, n_input_dims)``."""
        phase = u.unsqueeze(-1) * self.scales.to(u.dtype)  # (n, D, K)
        return torch.stack((phase.sin(), phase.cos()), dim=-1).reshape(u.shape[0], self.n_output_dims)

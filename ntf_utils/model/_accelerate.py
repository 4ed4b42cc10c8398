"""Faster training forward passes: ``torch.compile`` and autocast mixed precision, behind flags.

:class:`FastForward` wraps a :class:`~ntf_utils.model._network.FieldNetwork` without copying it
(same parameters) and is what :func:`ntf_utils.model._train.train` calls through its ``model=``
argument; evaluation, prediction and saving keep using the plain network.

* ``compile=True``: the forward (hash-grid encoding + MLP + decoder) and its backward go through
  ``torch.compile`` (TorchInductor): the encoding's dozens of small element-wise ops are fused into
  a few kernels (Triton on CUDA, C++/OpenMP on CPU). The compiled function is the same function;
  ``tests/test_atlas.py`` checks outputs and gradients against the eager network on CPU. On CPU it
  gains little: ``benchmarks/bench_train.py`` measured 129k vs 110k cells/s per training step
  (2 cores, 16 levels, 2^19 table), because the table gather and scatter-add dominate either way.
* ``amp="bf16"`` (or ``"fp16"``): autocast on CUDA: the MLP and decoder matmuls run in half
  precision on tensor cores, the hash table, its gathers and the optimizer stay float32, outputs
  are returned as float32 so the loss is computed in float32. bf16 needs no loss scaling; with
  fp16, small gradients can underflow (the training loop has no GradScaler), so prefer bf16.
  On CPU autocast is not used (no speed-up for these shapes).

Neither path has been timed on a GPU in this repository (no GPU was available); see docs/scale.md.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FastForward", "accelerated_model", "compile_available"]

_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


def compile_available() -> tuple[bool, str]:
    """Whether ``torch.compile`` can build kernels here, and why not when it cannot."""
    if not hasattr(torch, "compile"):
        return False, f"torch {torch.__version__} has no torch.compile"
    import importlib

    try:
        importlib.import_module("torch._inductor")
    except Exception as err:  # pragma: no cover - broken installs
        return False, f"TorchInductor does not import: {err}"
    import shutil

    if not torch.cuda.is_available() and shutil.which("g++") is None and shutil.which("c++") is None:
        return False, "TorchInductor needs a C++ compiler (g++) on CPU"
    return True, ""


class FastForward(nn.Module):
    """A field network's forward pass, optionally compiled and under autocast.

    Parameters
    ----------
    network
        The :class:`~ntf_utils.model._network.FieldNetwork` (shared, not copied).
    compile
        Run the forward through ``torch.compile``.
    amp
        ``None``, ``"bf16"`` or ``"fp16"``: autocast dtype on CUDA (ignored on CPU).
    compile_mode
        ``mode`` of ``torch.compile`` (e.g. ``"max-autotune-no-cudagraphs"`` on a GPU).
    """

    def __init__(self, network: nn.Module, *, compile: bool = False, amp: str | None = None,
                 compile_mode: str | None = None) -> None:
        super().__init__()
        if amp not in (None, *_AMP):
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', not {amp!r}")
        self.network = network
        self.amp = amp
        self.compiled = bool(compile)
        self._forward = torch.compile(network, mode=compile_mode, dynamic=False) if compile else network

    def forward(self, u: torch.Tensor, gene_index: torch.Tensor | None = None, return_latent: bool = False,
                section: torch.Tensor | None = None):
        """Same signature and result as ``FieldNetwork.forward`` (outputs in float32)."""
        use_amp = self.amp is not None and u.device.type == "cuda"
        with torch.autocast(device_type=u.device.type, dtype=_AMP.get(self.amp, torch.bfloat16), enabled=use_amp):
            out = self._forward(u, gene_index, return_latent, section)
        if return_latent:
            return out[0].float(), out[1].float()
        return out.float()


def accelerated_model(network: nn.Module, *, compile: bool = False, amp: str | None = None,
                      compile_mode: str | None = None) -> nn.Module | None:
    """A :class:`FastForward` when any flag is set, else ``None`` (train the plain network)."""
    if not compile and amp is None:
        return None
    if compile:
        ok, why = compile_available()
        if not ok:
            raise RuntimeError(f"compile=True but torch.compile is unusable here: {why}; pass compile=False")
    return FastForward(network, compile=compile, amp=amp, compile_mode=compile_mode)

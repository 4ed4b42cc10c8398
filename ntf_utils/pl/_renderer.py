"""Plotly's default renderer in Jupyter, chosen so that figures survive export to HTML.

Inside a Jupyter kernel Plotly picks the ``plotly_mimetype`` renderer: each figure is sent only as
``application/vnd.plotly.v1+json``, which JupyterLab draws but which static exports do not (``jupyter
nbconvert --to html``, nbviewer, Sphinx/myst-nb pages show nothing). Importing :mod:`ntf_utils.pl`
replaces exactly that automatic choice with ``plotly_mimetype+notebook``: the same JSON for JupyterLab
plus an HTML copy of the figure, with plotly.js embedded once per notebook (about 4.8 MB, no network
needed to view it).

Nothing changes when the user has chosen: with ``PLOTLY_RENDERER`` set, or ``plotly.io.renderers.default``
set to anything else (``"browser"`` in a terminal, ``"vscode"``, ``"colab"``, ...). To keep Plotly's own
choice, set ``PLOTLY_RENDERER=plotly_mimetype`` before starting the kernel, or set
``plotly.io.renderers.default`` after importing ``ntf_utils``.
"""

from __future__ import annotations

import os
import sys

__all__ = ["NOTEBOOK_RENDERER", "set_default_renderer"]

#: The renderer :func:`set_default_renderer` installs.
NOTEBOOK_RENDERER = "plotly_mimetype+notebook"
# What Plotly chooses by itself inside a Jupyter kernel (plotly.io._renderers, plotly >= 5).
_PLOTLY_KERNEL_CHOICE = "plotly_mimetype"


def set_default_renderer() -> str | None:
    """Make figures in Jupyter exportable: switch Plotly's automatic ``plotly_mimetype`` choice to
    ``plotly_mimetype+notebook``.

    Returns the renderer set, or ``None`` when nothing was changed (``PLOTLY_RENDERER`` is set, or the
    current default is not Plotly's automatic Jupyter choice).
    """
    if os.environ.get("PLOTLY_RENDERER") or "ipykernel" not in sys.modules:
        return None  # the user chose, or not a Jupyter kernel (then Plotly never picks plotly_mimetype)
    import plotly.io as pio

    if pio.renderers.default != _PLOTLY_KERNEL_CHOICE:
        return None
    pio.renderers.default = NOTEBOOK_RENDERER
    return NOTEBOOK_RENDERER

"""`pl.section_effects`: the learned per-section technical effects of a field as a heatmap."""

from __future__ import annotations

import numpy as np

__all__ = ["section_effects"]

KINDS = {"offset": "offset", "scale": "log_scale"}


def section_effects(field, genes=None, *, kind: str = "offset", n_genes: int = 30, title: str | None = None):
    """Heatmap of a field's per-section technical effects: sections x genes.

    Parameters
    ----------
    field
        A fitted :class:`~ntf_utils.NTFField` with section effects (``field.sections`` not empty).
    genes
        Genes to show (default: the ``n_genes`` whose effect varies most between sections).
    kind
        ``"offset"`` (added to the output; for count losses the log relative capture efficiency) or
        ``"scale"`` (log scale of each gene's spatial variation).
    n_genes
        How many genes to show when ``genes`` is not given.
    title
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        Sections as rows (in z order), genes as columns, a diverging colour scale centred on 0 (no
        effect: the section is measured as the average section is).
    """
    import plotly.graph_objects as go

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    table = field.section_effects(genes)
    if table.empty:
        raise ValueError("this field has no section effects: fit it on labelled "
                         "sections with config.network.section_effects=None or True")
    matrix = table.pivot(index="section", columns="gene", values=KINDS[kind])
    order = np.argsort(field.info.get("sections_z", list(range(len(field.sections)))), kind="stable")
    matrix = matrix.loc[[field.sections[i] for i in order]]
    if genes is None:
        matrix = matrix[matrix.std(0).sort_values(ascending=False).index[:n_genes]]
    else:
        matrix = matrix[table["gene"].unique()]  # in the field's gene order
    limit = float(np.abs(matrix.to_numpy()).max()) or 1.0
    fig = go.Figure(go.Heatmap(z=matrix.to_numpy(), x=list(matrix.columns), y=list(matrix.index),
                               colorscale="RdBu_r", zmid=0.0, zmin=-limit, zmax=limit,
                               colorbar={"title": KINDS[kind]},
                               hovertemplate="section %{y}<br>gene %{x}<br>" + KINDS[kind] + " %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title or f"learned section effects ({KINDS[kind]}), centred over sections",
                      xaxis_title="gene", yaxis_title="section (by z)", yaxis_autorange="reversed",
                      template="plotly_white", height=max(300, 40 * len(matrix) + 150))
    return fig

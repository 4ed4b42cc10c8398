"""Shared helpers for the plotting views: value lookup, subsampling, colours and 3D scene layout.

Nothing here computes anything expensive: values are read from the AnnData / Volume as stored.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._anndata import read_matrix, read_units
from .._constants import Key
from ._renderer import set_default_renderer

__all__ = [
    "NA_COLOR",
    "CONTEXT_COLOR",
    "FONT",
    "check_adata",
    "coords_3d",
    "coords_2d",
    "gene_values",
    "ColorSpec",
    "is_categorical",
    "categorical_spec",
    "resolve_color",
    "layer_description",
    "value_label",
    "subsample",
    "f32",
    "subsample_note",
    "make_palette",
    "finite_range",
    "colorbar",
    "xyz_hover",
    "axis_label",
    "units_of",
    "CAMERA_DIRECTION",
    "CAMERA_DISTANCE",
    "aspect_ratio",
    "camera",
    "scene",
    "title_text",
    "base_layout",
    "horizontal_colorbar",
    "range_of",
]
# In a Jupyter kernel, importing ntf_utils.pl switches Plotly's automatic renderer to one whose output also
# shows in HTML exports and on the documentation site; a renderer the user chose is kept (see _renderer).
set_default_renderer()

#: Colour used for missing values (NaN gene values, missing categories) and faint context clouds.
NA_COLOR = "#c8c8c8"
CONTEXT_COLOR = "#9a9a9a"
#: Dark text on white: used for fonts, so every view reads the same.
FONT = dict(family="Arial, Helvetica, sans-serif", size=13, color="#222222")


# --------------------------------------------------------------------------------------------- input


def check_adata(adata, name: str = "adata") -> None:
    """Raise a TypeError unless ``adata`` looks like an AnnData."""
    if not (hasattr(adata, "obs") and hasattr(adata, "var_names") and hasattr(adata, "obsm")):
        raise TypeError(
            f"{name} must be an AnnData (got {type(adata).__name__}); build one with "
            "ntf_utils.pp.stack_sections(...) or anndata.AnnData(X, obs=..., obsm={'spatial_3d': coords})"
        )


def coords_3d(adata, spatial_key: str = Key.obsm.spatial_3d) -> np.ndarray:
    """``adata.obsm[spatial_key]`` as an ``(n_obs, 3)`` float64 array, with a clear error otherwise."""
    if spatial_key not in adata.obsm:
        raise KeyError(
            f"adata.obsm has no {spatial_key!r}; available keys: {list(adata.obsm.keys())}. "
            "Stack the sections with ntf_utils.pp.stack_sections (it writes obsm['spatial_3d']) "
            "or pass spatial_key=... naming an (n_obs, 3) array."
        )
    xyz = np.asarray(adata.obsm[spatial_key], dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise ValueError(
            f"obsm[{spatial_key!r}] has shape {xyz.shape}; a 3D view needs (n_obs, 3) x, y, z coordinates. "
            "Stack the sections with ntf_utils.pp.stack_sections or pass spatial_key='spatial_3d'."
        )
    return xyz[:, :3]


def coords_2d(adata, spatial_key: str | None = None) -> np.ndarray:
    """In-plane ``(n_obs, 2)`` coordinates: ``obsm[spatial_key]`` or, by default, ``spatial`` then ``spatial_3d``."""
    keys = [spatial_key] if spatial_key is not None else [Key.obsm.spatial, Key.obsm.spatial_3d]
    for key in keys:
        if key in adata.obsm:
            xy = np.asarray(adata.obsm[key], dtype=np.float64)
            if xy.ndim != 2 or xy.shape[1] < 2:
                raise ValueError(f"obsm[{key!r}] has shape {xy.shape}; expected (n_obs, 2) or (n_obs, 3).")
            return xy[:, :2]
    raise KeyError(
        f"adata.obsm has none of {keys}; available keys: {list(adata.obsm.keys())}. "
        "Pass spatial_key=... naming the in-plane coordinates."
    )


def gene_values(adata, gene: str, layer: str | None = None) -> np.ndarray:
    """One gene's values (from ``X`` or ``layer``) as a dense float64 vector; never copies the matrix."""
    if gene not in adata.var_names:
        raise KeyError(_unknown_key_message(adata, gene, what="gene"))
    mat = read_matrix(adata, layer)
    j = adata.var_names.get_loc(gene)
    if not isinstance(j, (int, np.integer)):
        raise ValueError(
            f"gene {gene!r} occurs more than once in var_names; run adata.var_names_make_unique()."
        )
    col = mat[:, j]
    if hasattr(col, "toarray"):
        col = col.toarray()
    return np.asarray(col, dtype=np.float64).ravel()


def _unknown_key_message(adata, key, what: str = "key") -> str:
    genes = list(map(str, adata.var_names[:20]))
    more = f" (first 20 of {adata.n_vars})" if adata.n_vars > 20 else ""
    return (
        f"{key!r} is neither a gene in adata.var_names nor a column of adata.obs. "
        f"Available obs columns: {list(map(str, adata.obs.columns))}; genes{more}: {genes}."
    )


@dataclass
class ColorSpec:
    """What to colour points by.

    ``kind`` is ``"continuous"`` (``values`` float) or ``"categorical"`` (``values`` object array of
    labels, NaN for missing, ``categories`` the ordered labels that occur).
    """

    key: str
    kind: str
    values: np.ndarray
    label: str
    categories: list | None = None
    colors: list[str] | None = None

    def take(self, idx: np.ndarray | None) -> np.ndarray:
        return self.values if idx is None else self.values[idx]


def is_categorical(series: pd.Series) -> bool:
    dtype = series.dtype
    return (
        isinstance(dtype, pd.CategoricalDtype)
        or pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_bool_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
    )


def categorical_spec(adata, key: str, series: pd.Series, palette=None) -> ColorSpec:
    """A categorical ColorSpec from an obs column; colours from ``palette``, ``uns[key + '_colors']`` or defaults."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        present = set(series.dropna().unique())
        categories = [c for c in series.cat.categories if c in present]
        all_categories = list(series.cat.categories)
    else:
        uniq = pd.unique(series.dropna())
        try:
            categories = sorted(uniq)
        except TypeError:
            categories = list(uniq)
        all_categories = categories
    values = series.to_numpy(dtype=object)
    colors = None
    uns_colors = adata.uns.get(f"{key}_colors") if hasattr(adata, "uns") else None
    if palette is None and uns_colors is not None and len(uns_colors) == len(all_categories):
        # scanpy's convention: one colour per category, in category order.
        lookup = dict(zip(all_categories, list(uns_colors)))
        colors = [str(lookup[c]) for c in categories]
    else:
        colors = make_palette(len(categories), palette)
    return ColorSpec(
        key=key, kind="categorical", values=values, label=str(key), categories=categories, colors=colors
    )


def resolve_color(adata, key: str, layer: str | None = None, palette=None) -> ColorSpec:
    """Look ``key`` up as a gene (in ``X``/``layer``) or an obs column and describe how to colour by it."""
    if not isinstance(key, str):
        raise TypeError(f"color must be a gene name or an obs column name (str), got {type(key).__name__}.")
    in_var = key in adata.var_names
    in_obs = key in adata.obs.columns
    if in_var and in_obs:
        raise ValueError(
            f"{key!r} is both a gene in var_names and a column of obs; rename the obs column "
            f"(adata.obs.rename(columns={{{key!r}: ...}})) so the colour is unambiguous."
        )
    if in_var:
        values = gene_values(adata, key, layer)
        return ColorSpec(key=key, kind="continuous", values=values, label=value_label(key, layer, values))
    if in_obs:
        series = adata.obs[key]
        if is_categorical(series):
            return categorical_spec(adata, key, series, palette)
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
        return ColorSpec(key=key, kind="continuous", values=values, label=str(key))
    raise KeyError(_unknown_key_message(adata, key))


#: What the package's layers hold, in the words a colour bar uses ("KRT19 (log-normalised)").
_LAYER_WORDS = {
    Key.layers.counts: "counts",
    Key.layers.lognorm: "log-normalised",
    Key.layers.denoised: "NTF denoised",
    Key.layers.truth: "ground truth",
    Key.layers.intensity: "intensity",
    Key.layers.std: "ensemble s.d.",
    Key.layers.lower: "interval lower bound",
    Key.layers.upper: "interval upper bound",
    Key.layers.width: "interval width",
}


def layer_description(layer: str | None, values: np.ndarray | None = None) -> str:
    """What a layer's values are, for a label: ``"log-normalised"``, ``"counts"`` ...

    ``layer=None`` (``adata.X``) reads ``"counts"`` when ``values`` are all non-negative whole numbers,
    else ``"expression"``; a layer the package does not know is named as it is.
    """
    if layer is not None:
        return _LAYER_WORDS.get(layer, str(layer))
    if values is not None:
        finite = np.asarray(values, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        if finite.size and finite.min() >= 0 and np.all(finite == np.round(finite)):
            return "counts"
    return "expression"


def value_label(gene: str, layer: str | None = None, values: np.ndarray | None = None, sep: str = "<br>") -> str:
    """A colour-bar title for one gene's values: ``"KRT19<br>(log-normalised)"`` (``sep`` between)."""
    return f"{gene}{sep}({layer_description(layer, values)})"


# ----------------------------------------------------------------------------------------- sampling


def subsample(n: int, max_points: int | None, seed: int = 0) -> np.ndarray | None:
    """Sorted indices of a deterministic random subsample of ``max_points`` of ``n``, or None to keep all."""
    if max_points is None or n <= max_points:
        return None
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1 (got {max_points}); pass None to draw every point.")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=int(max_points), replace=False))


def f32(a) -> np.ndarray:
    """Float32 copy for trace arrays: half the HTML size of float64, ample precision for display."""
    return np.asarray(a, dtype=np.float32)


def subsample_note(n: int, idx: np.ndarray | None, what: str = "cells", seed: int = 0) -> str:
    if idx is None:
        return ""
    return f"{len(idx):,} of {n:,} {what} shown (random subsample, seed={seed})"


# ------------------------------------------------------------------------------------------- colours


def make_palette(n: int, palette=None) -> list[str]:
    """``n`` distinct colours that read well on white: D3 (<= 10), Dark24 (<= 24), then evenly spaced hues."""
    import plotly.colors as pc

    if palette is not None:
        if isinstance(palette, str):
            if not hasattr(pc.qualitative, palette):
                raise ValueError(
                    f"unknown palette {palette!r}; use a plotly.colors.qualitative name such as 'D3', "
                    "'Dark24', 'Set1', or a list of colours."
                )
            palette = list(getattr(pc.qualitative, palette))
        palette = list(palette)
        if len(palette) == 0:
            raise ValueError("palette is empty; pass a list of colours or a plotly qualitative palette name.")
        return [palette[i % len(palette)] for i in range(n)]
    if n <= 10:
        return list(pc.qualitative.D3[:n])
    if n <= 24:
        return list(pc.qualitative.Dark24[:n])
    out = []
    for i in range(n):
        h = i / n
        light = 0.42 if i % 2 == 0 else 0.58
        r, g, b = colorsys.hls_to_rgb(h, light, 0.75)
        out.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return out


def finite_range(values: np.ndarray, cmin=None, cmax=None) -> tuple[float, float]:
    """``(cmin, cmax)``: the finite min/max of ``values`` unless given; widened if flat."""
    finite = values[np.isfinite(values)]
    lo = float(finite.min()) if cmin is None and finite.size else (float(cmin) if cmin is not None else 0.0)
    hi = float(finite.max()) if cmax is None and finite.size else (float(cmax) if cmax is not None else 1.0)
    if hi <= lo:
        hi = lo + 1.0 if lo == 0 else lo + abs(lo) * 1e-3
    return lo, hi


def colorbar(title: str) -> dict:
    return dict(
        title=dict(text=title, side="top"), thickness=14, len=0.6, outlinewidth=0, tickfont=dict(size=11)
    )


# -------------------------------------------------------------------------------------------- layout


def xyz_hover(units: str | None) -> str:
    """Hover text of a point's x, y and z (in ``units``), for a ``hovertemplate``."""
    unit = f" {units}" if units else ""
    return f"x=%{{x:.4g}}{unit}<br>y=%{{y:.4g}}{unit}<br>z=%{{z:.4g}}{unit}"


def axis_label(axis: str, units: str | None) -> str:
    return f"{axis} ({units})" if units else axis


def units_of(adata, units: str | None) -> str | None:
    """The coordinate units: ``units`` if given, else ``adata.uns['ntf']['units']`` when present."""
    if units is not None:
        return units
    return read_units(adata)


#: Direction the default camera looks from: front-right and raised, so x runs left to right, y goes
#: into the picture and a stack of flat sections reads as a stack.
CAMERA_DIRECTION = np.array([0.55, -1.45, 0.95])
#: Eye distance per unit of the scene box's diagonal (plotly's default eye sits at 1.25 x the cube's).
CAMERA_DISTANCE = 1.25


def aspect_ratio(ranges) -> np.ndarray:
    """Plotly's ``aspectmode='data'`` ratio for these axis ranges (extents over their geometric mean)."""
    ext = np.array([max(float(hi) - float(lo), 0.0) for lo, hi in ranges])
    top = ext.max() if ext.max() > 0 else 1.0
    ext = np.where(ext > 0, ext, top * 0.02)  # a flat axis still gets a sliver of depth
    return ext / np.exp(np.mean(np.log(ext)))


def camera(ranges=None, direction=None, distance: float = CAMERA_DISTANCE) -> dict:
    """A camera that frames the whole scene box: eye distance scales with the box's diagonal."""
    ratio = aspect_ratio(ranges) if ranges is not None else np.ones(3)
    d = np.asarray(CAMERA_DIRECTION if direction is None else direction, dtype=float)
    d = d / np.linalg.norm(d)
    eye = d * distance * float(np.linalg.norm(ratio))
    return dict(
        eye=dict(x=float(eye[0]), y=float(eye[1]), z=float(eye[2])),
        up=dict(x=0, y=0, z=1),
        center=dict(x=0, y=0, z=-0.1 * float(ratio[2])),  # look a little low: the box sits higher
    )


def scene(
    units: str | None = None,
    ranges=None,
    fixed: bool = False,
    direction=None,
    distance: float = CAMERA_DISTANCE,
) -> dict:
    """A white 3D scene: light grid, axis titles in original units, aspect ratio from the data.

    ``ranges`` (three ``(lo, hi)``, the data bounds) sizes the default camera. With ``fixed=True`` the
    axis ranges are pinned to them and the aspect ratio is set to what ``aspectmode='data'`` would give,
    so the scene stays put while traces change (sliders, widgets); otherwise ``aspectmode='data'``.
    """
    axis_style = dict(
        backgroundcolor="white",
        gridcolor="#e3e3e3",
        zerolinecolor="#e3e3e3",
        linecolor="#bbbbbb",
        showbackground=True,
        tickfont=dict(size=10, color="#444444"),
        title=dict(font=dict(size=13, color="#222222")),
    )
    out = dict(camera=camera(ranges, direction, distance), dragmode="orbit")
    for name, axis in zip(("xaxis", "yaxis", "zaxis"), "xyz"):
        out[name] = dict(axis_style, title=dict(axis_style["title"], text=axis_label(axis, units)))
    if fixed and ranges is not None:
        ratio = aspect_ratio(ranges)
        for name, (lo, hi) in zip(("xaxis", "yaxis", "zaxis"), ranges):
            lo, hi = float(lo), float(hi)
            if hi <= lo:
                pad = abs(lo) * 0.01 + 1.0
                lo, hi = lo - pad, hi + pad
            out[name]["range"] = [lo, hi]
            out[name]["autorange"] = False
        out["aspectmode"] = "manual"
        out["aspectratio"] = dict(x=float(ratio[0]), y=float(ratio[1]), z=float(ratio[2]))
    else:
        out["aspectmode"] = "data"
    return out


def title_text(main: str, note: str = "") -> str:
    return f"{main}<br><sup>{note}</sup>" if note else main


def base_layout(title: str, *, legend_title: str | None = None, legend: str = "right") -> dict:
    """Title, fonts, white background and legend placement shared by all views.

    ``legend="right"`` puts the legend outside the plot on the right (the scene shrinks to make room,
    so long legends never cover it); ``"inside"`` puts a small legend in the bottom-left corner, for
    figures whose right side holds a colour bar.
    """
    if legend == "right":
        place = dict(x=1.02, xanchor="left", y=1.0, yanchor="top")
    elif legend == "inside":
        place = dict(x=0.0, xanchor="left", y=0.0, yanchor="bottom")
    else:
        raise ValueError(f"legend must be 'right' or 'inside', got {legend!r}.")
    layout = dict(
        template="plotly_white",
        title=dict(text=title, x=0.02, xanchor="left", font=dict(size=16, color="#222222")),
        font=FONT,
        paper_bgcolor="white",
        plot_bgcolor="white",
        margin=dict(l=10, r=10, t=70, b=10),
        legend=dict(
            itemsizing="constant",
            bgcolor="rgba(255,255,255,0.85)",
            bordercolor="#dddddd",
            borderwidth=1,
            font=dict(size=12),
            **place,
        ),
    )
    if legend_title:
        layout["legend"]["title"] = dict(text=f"<b>{legend_title}</b>")
    return layout


def horizontal_colorbar(title: str) -> dict:
    """A colour bar under the plot, for figures whose right side holds a legend."""
    return dict(
        title=dict(text=title, side="top"),
        orientation="h",
        x=0.5,
        xanchor="center",
        y=-0.02,
        yanchor="top",
        len=0.5,
        thickness=12,
        outlinewidth=0,
        tickfont=dict(size=11),
    )


def range_of(xyz: np.ndarray, pad: float = 0.02):
    """Per-axis ``(lo, hi)`` of finite coordinates, padded by ``pad`` of the largest extent."""
    finite = xyz[np.all(np.isfinite(xyz), axis=1)]
    if finite.size == 0:
        return [(0.0, 1.0)] * 3
    lo, hi = finite.min(axis=0), finite.max(axis=0)
    margin = pad * float((hi - lo).max() or 1.0)
    return [(float(a) - margin, float(b) + margin) for a, b in zip(lo, hi)]

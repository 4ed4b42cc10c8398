"""`tl.render_to_zarr`: a dense volume of any size, rendered chunk by chunk into OME-Zarr.

Layout (OME-NGFF 0.4 image, zarr format 2, ``/`` chunk separator), readable by napari
(``napari --plugin napari-ome-zarr volume.zarr``), ``ome-zarr``, neuroglancer or plain zarr::

    volume.zarr/
      .zattrs        multiscales (axes c, z, y, x; voxel size and origin in original units; the space
                     axes' "unit" when the field's units map to a UDUNITS-2 name), omero channels (one
                     per gene, labelled with its name), ntf (genes, bounds, units as recorded, field)
      0/             (n_genes, nz, ny, nx) float32, chunks (1, cz, cy, cx)
      1/, 2/, ...    2x mean-downsampled levels (the pyramid viewers use when zoomed out)
      labels/tissue/ uint8 inside-the-tissue mask (1 inside) with its own pyramid (OME "image-label")

Memory stays bounded: one spatial chunk's points, latent and a group of genes at a time
(``max_block_bytes``), never the whole volume; the pyramid is built from the stored level below,
chunk by chunk.
"""

from __future__ import annotations

import shutil
import unicodedata
from itertools import product
from pathlib import Path

import numpy as np
import torch

from .._constants import Key

__all__ = ["render_to_zarr"]

NGFF_VERSION = "0.4"
# the space units OME-NGFF 0.4 allows (UDUNITS-2 names)
NGFF_SPACE_UNITS = frozenset({
    "angstrom", "attometer", "centimeter", "decimeter", "exameter", "femtometer", "foot", "gigameter",
    "hectometer", "inch", "kilometer", "megameter", "meter", "micrometer", "mile", "millimeter", "nanometer",
    "parsec", "petameter", "picometer", "terameter", "yard", "yoctometer", "yottameter", "zeptometer", "zettameter",
})
# symbols matched case-sensitively ("Mm" is a megameter, "mm" a millimeter); NFKC has turned µ into μ and Å into Å
_UNIT_SYMBOLS = {"um": "micrometer", "μm": "micrometer", "nm": "nanometer", "mm": "millimeter", "cm": "centimeter",
                 "m": "meter", "km": "kilometer", "pm": "picometer", "Å": "angstrom"}
_UNIT_WORDS = {"micron": "micrometer", "microns": "micrometer", "feet": "foot", "inches": "inch"}


def ngff_space_unit(units: str | None) -> str | None:
    """The OME-NGFF (UDUNITS-2) name of a space unit, or None when ``units`` is unknown or has none.

    Parameters
    ----------
    units
        Units as recorded (``uns["ntf"]["units"]``): a symbol (``"um"``, ``"µm"``, ``"nm"``, ``"mm"``) or a
        name in any case, British spelling or plural (``"microns"``, ``"Micrometres"``).

    Returns
    -------
    A name OME-NGFF 0.4 accepts for a ``"space"`` axis (``"micrometer"``), or None: a unit is never
    guessed, and units such as ``"pixel"`` have no UDUNITS-2 name.
    """
    if units is None:
        return None
    text = unicodedata.normalize("NFKC", str(units)).strip()
    if text in _UNIT_SYMBOLS:
        return _UNIT_SYMBOLS[text]
    word = text.lower().replace("metre", "meter")
    word = _UNIT_WORDS.get(word, word)
    if word not in NGFF_SPACE_UNITS and word.endswith("s"):
        word = word[:-1]
    return word if word in NGFF_SPACE_UNITS else None


def _array(group, name, shape, chunks, dtype, fill):
    from numcodecs import Blosc

    return group.create_array(
        name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill,
        compressors=Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE),
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )


def _multiscales(name, axes, scales, origin, n_levels, channel: bool, unit: str | None = None):
    datasets = []
    for level in range(n_levels):
        scale = [float(s) for s in scales[level]]
        trans = [float(o) for o in origin[level]]
        if channel:
            scale, trans = [1.0, *scale], [0.0, *trans]
        datasets.append({"path": str(level), "coordinateTransformations": [
            {"type": "scale", "scale": scale}, {"type": "translation", "translation": trans}]})
    space = {"type": "space"} if unit is None else {"type": "space", "unit": unit}  # NGFF: unit is optional
    ax = ([{"name": "c", "type": "channel"}] if channel else []) + [{"name": a, **space} for a in axes]
    return [{"version": NGFF_VERSION, "name": name, "axes": ax, "datasets": datasets, "type": "mean"}]


def _downsample_shape(shape):
    return tuple(max(1, (s + 1) // 2) if s > 1 else 1 for s in shape)


def _pool(block: np.ndarray, factors, how: str) -> np.ndarray:
    """2x pooling of the last three axes (mean, or max for labels); odd edges pool what exists."""
    for axis_offset, f in enumerate(factors):
        if f == 1:
            continue
        axis = block.ndim - 3 + axis_offset
        n = block.shape[axis]
        if n % 2:
            edge = np.take(block, [n - 1], axis=axis)
            block = np.concatenate([block, edge], axis=axis)  # repeating the edge keeps its mean
        shape = list(block.shape)
        shape[axis : axis + 1] = [shape[axis] // 2, 2]
        block = block.reshape(shape)
        block = block.max(axis=axis + 1) if how == "max" else block.mean(axis=axis + 1, dtype=np.float64)
    return block


def render_to_zarr(
    field,
    path,
    shape=256,
    genes=None,
    *,
    chunks=(64, 64, 64),
    bounds=None,
    time=None,
    dtype: str = "float32",
    n_levels: int | None = None,
    mask: bool = True,
    outside_value: float | None = None,
    batch_size: int = 65536,
    max_block_bytes: float = 256e6,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Render a field on a regular grid straight to an OME-Zarr image, chunk by chunk.

    Parameters
    ----------
    field
        A trained :class:`~ntf_utils.model._field.NTFField`.
    path
        Output directory (``*.zarr``).
    shape
        ``(nx, ny, nz)`` voxels, or an int for the longest axis (others keep the aspect ratio), as
        in :meth:`NTFField.render`.
    genes
        Genes to render (default all); one channel each.
    chunks
        ``(cx, cy, cz)`` voxels per stored chunk (also the unit of work).
    bounds
        ``(3, 2)`` box in original units (default the training bounds).
    time
        Time, for a field with a time axis.
    dtype
        ``"float32"`` or ``"float16"`` (half the disk).
    n_levels
        Pyramid levels including full resolution (default: halve until the largest axis is
        <= 64 voxels, at most 6 levels).
    mask
        Also write the inside-the-tissue mask (``labels/tissue``).
    outside_value
        Write this value outside the tissue (default: the field's predictions everywhere).
    batch_size
        Points per forward pass.
    max_block_bytes
        Bound on one chunk's values in memory (genes are processed in groups below it).
    overwrite
        Replace an existing store.
    progress
        Show a tqdm bar over chunks.

    Returns
    -------
    The store's path. Read with ``zarr.open_group(path)["0"][gene_index]`` -> ``(nz, ny, nx)`` (the
    gene order is ``attrs["ntf"]["genes"]``), or open it in napari.

    Notes
    -----
    Values equal :meth:`NTFField.predict` at the voxel centres ``np.linspace(lo, hi, n)`` per
    axis (the voxel grid of :meth:`NTFField.render`). The space axes carry ``"unit"`` when the
    field's units (``field.info["units"]``) map to a UDUNITS-2 name (:func:`ngff_space_unit`:
    ``"um"`` -> ``"micrometer"``); ``attrs["ntf"]["units"]`` keeps them as recorded (None: unknown).
    """
    import zarr

    path = Path(path)
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        shutil.rmtree(path)
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', not {dtype!r}")
    box = np.asarray(bounds if bounds is not None else field.bounds[:3], dtype=np.float64)
    if box.shape != (3, 2):
        raise ValueError(f"bounds must be ((xmin, xmax), (ymin, ymax), (zmin, zmax)), got shape {box.shape}")
    nxyz = field.grid_shape(shape, box)
    index = field.gene_index(genes)
    gene_list = [field.genes[i] for i in index]
    cxyz = tuple(int(max(1, min(c, n))) for c, n in zip(chunks, nxyz))
    axes = [np.linspace(lo, hi, n) for (lo, hi), n in zip(box, nxyz)]
    shapes = _level_shapes(tuple(reversed(nxyz)), n_levels)
    scales, origins = _level_transforms(shapes, axes)

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    czyx = tuple(reversed(cxyz))
    arrays = [_array(root, str(lv), (len(gene_list), *shape), (1, *[min(c, s) for c, s in zip(czyx, shape)]),
                     dtype, np.nan) for lv, shape in enumerate(shapes)]
    units = field.info.get(Key.uns.units)
    unit = ngff_space_unit(units)
    labels = _tissue_labels(root, shapes, czyx, scales, origins, unit) if mask else None
    group = max(1, int(max_block_bytes // (int(np.prod(cxyz)) * 4)))  # genes per block under max_block_bytes
    lows, highs = _render_level0(field, arrays[0], None if labels is None else labels[0], index, axes, cxyz,
                                 group=group, time=time, dtype=dtype, outside_value=outside_value,
                                 batch_size=batch_size, progress=progress)
    _build_pyramid(arrays, labels, shapes, czyx, group, dtype)

    root.attrs.update({
        "multiscales": _multiscales("ntf_field", ("z", "y", "x"), scales, origins, len(shapes), channel=True,
                                    unit=unit),
        "omero": {"name": "ntf_field", "version": NGFF_VERSION, "rdefs": {"model": "greyscale"},
                  "channels": [{"label": name, "color": "FFFFFF", "active": k == 0,
                                "window": {"min": float(lo), "max": float(hi), "start": float(lo), "end": float(hi)}}
                               for k, (name, lo, hi) in enumerate(zip(gene_list, lows, highs))]},
        "ntf": {"genes": gene_list, "shape_xyz": list(nxyz), "bounds": box.tolist(),
                "axes_order": "c, z, y, x", "time": None if time is None else float(time),
                # as recorded, also when it is not a UDUNITS-2 name (then the axes carry no unit)
                "units": None if units is None else str(units),
                "field": {k: field.info.get(k) for k in ("n_cells", "n_genes", "store", "device")},
                "values": "field.predict at voxel centres np.linspace(lo, hi, n) per axis"},
    })
    zarr.consolidate_metadata(str(path))
    return path


def _level_shapes(shape_zyx: tuple, n_levels: int | None) -> list[tuple]:
    """``(z, y, x)`` shape of every pyramid level; by default halve until the largest axis is <= 64 (<= 6 levels)."""
    shapes = [shape_zyx]
    if n_levels is None:
        while max(shapes[-1]) > 64 and len(shapes) < 6:
            shapes.append(_downsample_shape(shapes[-1]))
    else:
        for _ in range(max(1, int(n_levels)) - 1):
            shapes.append(_downsample_shape(shapes[-1]))
    return shapes


def _level_transforms(shapes: list[tuple], axes: list[np.ndarray]) -> tuple[list, list]:
    """Voxel size and first voxel centre, ``(z, y, x)``, of every level (a coarse voxel spans fine ones)."""
    spacing = [(a[1] - a[0]) if len(a) > 1 else 1.0 for a in axes]
    scales, origins = [], []
    for shape in shapes:
        factor = [shapes[0][k] / shape[k] for k in range(3)]
        scales.append([spacing[2 - k] * factor[k] for k in range(3)])
        origins.append([axes[2 - k][0] + (factor[k] - 1) * spacing[2 - k] / 2 for k in range(3)])
    return scales, origins


def _tissue_labels(root, shapes, czyx, scales, origins, unit) -> list:
    """The ``labels/tissue`` image-label arrays (uint8, one per level) with their OME metadata."""
    label_root = root.create_group("labels")
    label_root.attrs["labels"] = ["tissue"]
    tissue = label_root.create_group("tissue")
    labels = [_array(tissue, str(lv), shape, tuple(min(c, s) for c, s in zip(czyx, shape)), "uint8", 0)
              for lv, shape in enumerate(shapes)]
    tissue.attrs.update({
        "multiscales": _multiscales("tissue", ("z", "y", "x"), scales, origins, len(shapes), channel=False,
                                    unit=unit),
        "image-label": {"version": NGFF_VERSION, "colors": [{"label-value": 1, "rgba": [255, 255, 255, 128]}],
                        "source": {"image": "../../"}},
    })
    return labels


def _render_level0(field, values, labels, index, axes, cxyz, *, group, time, dtype, outside_value, batch_size,
                   progress):
    """Level 0, one spatial chunk at a time, genes in groups of ``group``; returns each gene's (min, max)."""
    nxyz = tuple(len(a) for a in axes)
    blocks = list(product(*[range(0, n, c) for n, c in zip(nxyz, cxyz)]))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(blocks), desc="rendering", unit="chunk")
    g = len(index)
    w = field.network.decoder.weight
    lows, highs = np.full(g, np.inf), np.full(g, -np.inf)
    for x0, y0, z0 in blocks:
        sl = [slice(s, min(s + c, n)) for s, c, n in zip((x0, y0, z0), cxyz, nxyz)]
        sub = [a[s] for a, s in zip(axes, sl)]
        grid = np.meshgrid(*sub, indexing="ij")
        coords = np.stack([q.ravel() for q in grid], axis=1)
        if time is not None or field.n_input_dims == 4:
            coords = field._prepare_coords(coords, time)
        latent = torch.from_numpy(field.latent(coords, batch_size=batch_size)).to(w.device)
        inside = field.inside(coords) if (labels is not None or outside_value is not None) else None
        bshape = tuple(len(a) for a in sub)
        target = (sl[2], sl[1], sl[0])
        for g0 in range(0, g, group):
            gi = torch.as_tensor(index[g0 : g0 + group], device=w.device)
            with torch.no_grad():
                vals = np.concatenate([
                    field._output_to_values(field.network.decode(latent[s : s + batch_size], gi), gi).cpu().numpy()
                    for s in range(0, len(latent), batch_size)])
            if outside_value is not None:
                vals[~inside] = outside_value
            lows[g0 : g0 + len(gi)] = np.minimum(lows[g0 : g0 + len(gi)], np.nanmin(vals, axis=0))
            highs[g0 : g0 + len(gi)] = np.maximum(highs[g0 : g0 + len(gi)], np.nanmax(vals, axis=0))
            vol = vals.T.reshape(len(gi), *bshape).transpose(0, 3, 2, 1)  # (genes, z, y, x)
            values[(slice(g0, g0 + len(gi)), *target)] = vol.astype(dtype)
        if labels is not None:
            labels[target] = inside.reshape(bshape).T.astype(np.uint8)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return lows, highs


def _build_pyramid(arrays, labels, shapes, czyx, group, dtype) -> None:
    """Levels 1, 2, ...: each the 2x pooling of the stored level below (mean; max for labels), chunk by chunk."""
    for level in range(1, len(shapes)):
        prev, cur = shapes[level - 1], shapes[level]
        factors = [1 if p == 1 else 2 for p in prev]
        cz = [min(c, s) for c, s in zip(czyx, cur)]
        for start in product(*[range(0, s, c) for s, c in zip(cur, cz)]):
            out_sl = tuple(slice(s, min(s + c, n)) for s, c, n in zip(start, cz, cur))
            in_sl = tuple(slice(o.start * f, min(o.stop * f, p)) for o, f, p in zip(out_sl, factors, prev))
            want = tuple(s.stop - s.start for s in out_sl)
            for g0 in range(0, arrays[0].shape[0], group):
                block = arrays[level - 1][(slice(g0, g0 + group), *in_sl)]
                pooled = _pool(block.astype(np.float32), factors, "mean")
                arrays[level][(slice(g0, g0 + group), *out_sl)] = pooled[:, : want[0], : want[1], : want[2]].astype(dtype)
            if labels is not None:
                pooled = _pool(labels[level - 1][in_sl], factors, "max")
                labels[level][out_sl] = pooled[: want[0], : want[1], : want[2]]

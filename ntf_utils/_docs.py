"""Shared parameter documentation, written once and formatted into docstrings (as scanpy's ``_doc_params``).

A docstring names a shared parameter by a line holding only its placeholder, e.g. ``{doc_layer}``;
:func:`doc_params` replaces that line with the text, indented like the placeholder. Lines that
follow the placeholder at the description's indentation continue that parameter's description.
Only whole placeholder lines are replaced, so docstrings keep literal braces (``f"{key_added}_x"``).
"""

from __future__ import annotations

from textwrap import indent

__all__ = ["doc_params"]

# the options shared by tl.fit and atlas.fit_atlas (placeholder {fit_options})
doc_fit_options = """\
config
    A :class:`~ntf_utils.NTFConfig`; unset fields are chosen from the data.
steps, batch_size, loss
    Shortcuts overriding the same fields of ``config.training``.
device
    ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
seed
    Seeds initialisation, minibatches and the validation split; on CPU the same seed gives the
    same model bit for bit.
validation
    Held-out data for early stopping: an AnnData (e.g. the test sections of
    :func:`ntf_utils.pp.split_sections`), ``None`` to hold out ``config.training.validation_fraction``
    of the cells at random, or ``False`` to train for all ``steps``. The held-out loss is computed on
    at most 50,000 cells (a seeded subsample of a larger AnnData; at most 50,000 held out at random).
checkpoint_dir
    Directory for atomic checkpoints every ``config.training.checkpoint_every`` steps. If it already
    holds a checkpoint of this same run (same data, config and seed), the fit resumes from it; a
    checkpoint of a different run is an error.
progress
    Show a progress bar per phase of the fit (selection candidates, final fit) with the loss."""

doc_adata = """\
adata
    Stacked serial sections (:func:`ntf_utils.pp.stack_sections`), with (x, y, z) coordinates in
    ``obsm[spatial_key]``."""

doc_spatial_key = """\
spatial_key
    ``obsm`` key of the ``(n_cells, 3)`` (x, y, z) coordinates in original units."""

doc_layer = """\
layer
    Layer holding the values; ``None`` uses ``adata.X`` (dense or sparse)."""

doc_copy = """\
copy
    Return a modified copy and leave the input unchanged; otherwise (default) write into the input
    and return ``None``."""

doc_seed = """\
seed
    Seed of the random number generator: the same seed gives the same result."""

doc_genes = """\
genes
    A gene name or a list of gene names (default: all genes, in the order of ``var_names``)."""

doc_section_key = """\
section_key
    ``obs`` column naming the sections (written by :func:`ntf_utils.pp.stack_sections`)."""

doc_time_key = """\
time_key
    ``obs`` column holding each cell's time (numeric), for fields with a time axis."""

doc_mask_key = """\
mask_key
    Layer marking measured entries (1) vs genes absent from a section (0), as written by
    ``pp.stack_sections(join="outer")``; ignored when absent."""


def doc_params(**kwds):
    """Docstring decorator: replace each line ``{name}`` by ``kwds[name]``, indented like that line.

    Parameters
    ----------
    **kwds
        Shared parameter texts by placeholder name (``doc_layer=doc_layer``).

    Raises
    ------
    KeyError
        At decoration time, for a placeholder line whose name is not in ``kwds``.
    """

    def decorate(obj):
        lines = []
        for line in obj.__doc__.splitlines():
            name = line.strip()
            if len(name) > 2 and name[0] == "{" and name[-1] == "}" and name[1:-1].isidentifier():
                if name[1:-1] not in kwds:
                    raise KeyError(f"{obj.__qualname__}: no shared text for placeholder {name} in doc_params(...)")
                line = indent(kwds[name[1:-1]], line[: len(line) - len(line.lstrip())])
            lines.append(line)
        obj.__doc__ = "\n".join(lines)
        return obj

    return decorate

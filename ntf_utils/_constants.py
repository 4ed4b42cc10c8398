"""Every AnnData key name the package reads or writes, in one place (as squidpy's ``Key``).

Modules spell a key as ``Key.obsm.spatial_3d``, never as a string literal, so a renamed key changes
here only. Everything the package writes to ``uns`` lives under one namespace, ``uns["ntf"]``, with
one sub-key per producer (``Key.uns.alignment`` ...).
"""

from __future__ import annotations

__all__ = ["Key"]


class Key:
    """AnnData key names, grouped by slot."""

    class obs:
        section = "section"
        z = "z"
        time = "time"
        domain = "ntf_domain"
        inside = "inside"
        distance_to_data = "distance_to_data"
        true_domain = "domain"  # the synthetic generators' ground-truth domain
        region = "region"
        library_size = "library_size"
        voxel = "voxel"
        std_mean = "std_mean"
        distance_to_sections = "distance_to_sections"
        spacings_beyond = "spacings_beyond"
        flagged = "flagged"
        width_mean = "width_mean"

    class obsm:
        spatial = "spatial"
        spatial_3d = "spatial_3d"
        spatial_3d_true = "spatial_3d_true"
        latent = "X_latent"
        gradient = "ntf_gradient"

    class var:
        gene_ids = "gene_ids"  # the original gene names when gene symbols become var_names
        gene_symbols = "gene_symbols"  # scanpy's column of gene symbols

    class layers:
        counts = "counts"
        lognorm = "lognorm"
        truth = "truth"
        mask = "ntf_mask"
        denoised = "ntf"
        intensity = "intensity"
        std = "std"
        lower = "lower"
        upper = "upper"
        width = "width"

    class uns:
        ntf = "ntf"  # the package's namespace: uns["ntf"][<sub-key>]
        sections = "sections"
        units = "units"
        alignment = "alignment"
        source = "source"
        dataset = "dataset"
        uncertainty = "uncertainty"
        intervals = "intervals"
        synthetic = "synthetic"
        slab_sections = "slab_sections"
        transform = "transform"
        files = "files"  # uns["ntf"]["sections"]["files"]: the file each section was read from

"""Tests for pp.align_sections: recover known rigid transforms of synthetic serial sections."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from ntf_utils import pp

SPACING = 100.0  # ST-like spot lattice (um)
RADIUS = 1000.0
DZ = 150.0


def make_sections(n_sections=5, n_genes=30, seed=0) -> list[ad.AnnData]:
    """Serial sections of an irregular 3D blob with 5 expression domains (Voronoi cells in 3D).

    Each section has its own square spot lattice (random offset), a slightly different outline
    (the blob widens with z) and Poisson counts with domain-specific profiles and varying
    library sizes. Coordinates are in their true (registered) frame.
    """
    rng = np.random.default_rng(seed)
    harm = rng.normal(0, 0.12, (4, 2))
    centers = rng.uniform([-RADIUS, -RADIUS, 0], [RADIUS, RADIUS, n_sections * DZ], (5, 3)) * [0.7, 0.7, 1]
    profiles = rng.gamma(1.0, 1.0, (5, n_genes)) * 4 + 0.2
    out = []
    for i in range(n_sections):
        g = np.arange(-1.5 * RADIUS, 1.5 * RADIUS, SPACING)
        xx, yy = np.meshgrid(g, g)
        xy = np.column_stack([xx.ravel(), yy.ravel()]) + rng.uniform(0, SPACING, 2)
        phi = np.arctan2(xy[:, 1], xy[:, 0])
        outline = RADIUS * (
            1
            + 0.03 * i
            + sum(harm[k, 0] * np.cos((k + 2) * phi) + harm[k, 1] * np.sin((k + 2) * phi) for k in range(4))
        )
        xy = xy[np.linalg.norm(xy, axis=1) < outline]
        xyz = np.column_stack([xy, np.full(len(xy), i * DZ)])
        domain = np.argmin(((xyz[:, None, :] - centers[None]) ** 2).sum(-1), axis=1)
        lib = rng.lognormal(0, 0.3, len(xy))
        counts = rng.poisson(profiles[domain] * lib[:, None]).astype(np.float32)
        a = ad.AnnData(
            counts,
            obs=pd.DataFrame({"domain": domain}, index=[f"s{i}_{j}" for j in range(len(xy))]),
            var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]),
        )
        a.obsm["spatial"] = xy
        out.append(a)
    return out


def perturb(sections, seed=1, reflect=()):
    """Apply a random rotation (0-360 deg), translation (+-3000) and optional mirror per section."""
    rng = np.random.default_rng(seed)
    res = []
    for i, a in enumerate(sections):
        th = rng.uniform(0, 2 * np.pi)
        r = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        lin = r @ np.diag([1.0, -1.0]) if i in reflect else r
        b = a.copy()
        b.obsm["spatial"] = a.obsm["spatial"] @ lin.T + rng.uniform(-3000, 3000, 2)
        res.append(b)
    return res


def _fit_rigid(src, dst):
    ms, md = src.mean(0), dst.mean(0)
    u, _, vt = np.linalg.svd((src - ms).T @ (dst - md))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1.0, d]) @ u.T
    return r, md - ms @ r.T


def recovery_errors(truth, aligned, ref):
    """Per section: (rotation error in degrees, mean displacement / section width).

    The aligned stack lives in the reference section's (arbitrary) frame, so the true
    coordinates are first mapped into that frame by the reference's rigid transform.
    """
    g_r, g_t = _fit_rigid(truth[ref].obsm["spatial"], aligned[ref].obsm["spatial"])
    width = np.ptp(truth[ref].obsm["spatial"][:, 0])
    out = []
    for t, a in zip(truth, aligned):
        expect = t.obsm["spatial"] @ g_r.T + g_t
        got = a.obsm["spatial"][:, :2]
        r, _ = _fit_rigid(expect, got)
        out.append(
            (
                abs(np.degrees(np.arctan2(r[1, 0], r[0, 0]))),
                np.linalg.norm(expect - got, axis=1).mean() / width,
            )
        )
    return np.array(out)


@pytest.fixture(scope="module")
def truth_sections():
    return make_sections(seed=0)


def test_recovers_random_rigid_transforms(truth_sections):
    moved = perturb(truth_sections, seed=10)
    before = [m.obsm["spatial"].copy() for m in moved]
    aligned = pp.align_sections(moved, copy=True)
    err = recovery_errors(truth_sections, aligned, ref=2)
    assert err[:, 0].max() < 3.0, err  # rotation error (degrees)
    assert err[:, 1].max() < 0.05, err  # translation error (fraction of the section width)
    # the unaligned input is untouched and the transform reproduces the output
    for m, b, a in zip(moved, before, aligned):
        np.testing.assert_array_equal(m.obsm["spatial"], b)
        info = a.uns["ntf"]["alignment"]
        lin, t = np.array(info["linear"]), np.array(info["translation"])
        np.testing.assert_allclose(b @ lin.T + t, a.obsm["spatial"], atol=1e-6)
        assert info["reflection"] is False and info["reference"] == 2
        json.dumps(info)  # plain lists / floats only
        assert "ntf" not in m.uns
    assert aligned[2].uns["ntf"]["alignment"]["rotation_deg"] == 0.0


def test_already_aligned_stack_stays_put(truth_sections):
    aligned = pp.align_sections(truth_sections, key_added="spatial_aligned", copy=True)
    for a, t in zip(aligned, truth_sections):
        info = a.uns["ntf"]["alignment"]
        assert abs(info["rotation_deg"]) < 2.0  # sections differ in 3D, so not exactly 0
        assert np.linalg.norm(a.obsm["spatial_aligned"] - t.obsm["spatial"], axis=1).mean() < 0.5 * SPACING
        np.testing.assert_array_equal(a.obsm["spatial"], t.obsm["spatial"])  # original key kept


def test_reflection_and_stacked_input(truth_sections):
    moved = perturb(truth_sections, seed=13, reflect=(0, 3))
    # stacked AnnData: sections in obs["section"], z in spatial_3d which must follow the alignment
    stacked = ad.concat(moved, label="section", keys=[f"sec{i}" for i in range(len(moved))])
    stacked.obs["section"] = stacked.obs["section"].astype("category")
    z = np.repeat(np.arange(len(moved)) * DZ, [m.n_obs for m in moved])
    stacked.obsm["spatial_3d"] = np.column_stack([stacked.obsm["spatial"], z])
    out = pp.align_sections(stacked, allow_reflection=True, reference="sec2", copy=True)
    assert out is not stacked and "ntf" not in stacked.uns
    info = out.uns["ntf"]["alignment"]
    assert info["reference"] == "sec2"
    assert [info["sections"][f"sec{i}"]["reflection"] for i in range(5)] == [True, False, False, True, False]
    per_section = [out[(out.obs["section"] == f"sec{i}").to_numpy()] for i in range(5)]
    err = recovery_errors(truth_sections, per_section, ref=2)
    assert err[:, 0].max() < 3.0 and err[:, 1].max() < 0.05, err
    np.testing.assert_allclose(out.obsm["spatial_3d"][:, :2], out.obsm["spatial"])
    np.testing.assert_allclose(out.obsm["spatial_3d"][:, 2], z)


def test_copy_false_modifies_in_place(truth_sections):
    moved = perturb(truth_sections[:3], seed=3)
    before = [m.obsm["spatial"].copy() for m in moved]
    assert pp.align_sections(moved, copy=False, use_expression=False, n_rotations=4) is None
    assert all("alignment" in m.uns["ntf"] for m in moved)
    assert not np.array_equal(moved[0].obsm["spatial"], before[0])  # written in place


def test_default_writes_in_place_like_scanpy(truth_sections):
    """No copy argument: scanpy's convention, in place and None (as ``copy=False``)."""
    moved = perturb(truth_sections[:3], seed=3)
    expected = pp.align_sections(moved, copy=True, use_expression=False, n_rotations=4)
    assert pp.align_sections(moved, use_expression=False, n_rotations=4) is None
    for m, e in zip(moved, expected):
        np.testing.assert_array_equal(m.obsm["spatial"], e.obsm["spatial"])
        assert m.uns["ntf"]["alignment"] == e.uns["ntf"]["alignment"]


def test_errors(truth_sections):
    with pytest.raises(KeyError, match="obsm\\['xy'\\]"):
        pp.align_sections(truth_sections[:2], spatial_key="xy")
    with pytest.raises(ValueError, match="out of range"):
        pp.align_sections(truth_sections[:2], reference=5)
    with pytest.raises(ValueError, match="empty"):
        pp.align_sections([])
    stacked = ad.concat(truth_sections[:2])
    with pytest.raises(KeyError, match="obs\\['section'\\]"):
        pp.align_sections(stacked)

"""Earlier 3D-reconstruction methods, re-implemented from their papers for the benchmarks.

Not part of the package: these exist so that ``benchmarks/run.py`` can compare the hash-grid field
with what came before it, on the same data, the same targets and the same loss.

* :class:`FourierFeatureMLP`: Tancik et al. (2020), "Fourier Features Let Networks Learn High
  Frequency Functions in Low Dimensional Domains" (NeurIPS). Input ``v`` is mapped to
  ``[cos(2 pi B v), sin(2 pi B v)]`` with ``B`` an ``(m, d)`` matrix of i.i.d. ``N(0, sigma^2)``
  entries (their "Gaussian" mapping, m = 256), then a ReLU MLP (their 4 layers x 256 channels).
  This is the NeRF-style implicit neural representation (INR) used by SUICA- and SINTER3D-type
  spatial-omics methods.
* :class:`Siren`: Sitzmann et al. (2020), "Implicit Neural Representations with Periodic
  Activation Functions" (NeurIPS). Layers ``sin(w0 (W x + b))`` with ``w0 = 30``; first-layer
  weights ``U(-1/n, 1/n)``, later layers ``U(-sqrt(6/n)/w0, sqrt(6/n)/w0)`` (their initialisation,
  section 3.2 and supplement 1.5), a linear output layer.
* :func:`gp_baseline`: Gaussian-process regression on a low-rank representation: PCA of the
  training values to ``n_components`` components, a scikit-learn ``GaussianProcessRegressor`` with an
  anisotropic RBF + white-noise kernel on at most ``max_cells`` training cells, predicting the
  component scores, then the inverse PCA transform.

Shared protocol (the same as :func:`ntf_utils.tl.fit` with the default MSE loss):

* coordinates: per-axis min-max scaling of the training coordinates to ``[-1, 1]``;
* targets: the given values (log-normalised), standardised per gene on the training cells;
* loss: mean squared error; optimiser: Adam, cosine decay from ``lr`` to ``lr / 20`` after a short
  warm-up (NTF's schedule);
* early stopping: 5 % of the training cells held out at random, checked every 100 steps, patience
  4, best weights kept (``tl.fit``'s default, ``TrainingConfig.patience``);
* hyper-parameters (``sigma``, ``w0``, ``lr``) are tuned by :func:`tune_inr` on a validation split of
  the TRAINING sections only, never on the test sections.

Every fitted model has ``.predict(coords, genes=None)`` (original units in, original value units
out), ``.genes``, ``.name`` and ``.info``; the neural ones also have ``.history`` with
``(step, seconds, cpu_seconds, loss[, val_loss, score])`` rows for time-to-accuracy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

from ntf_utils import metrics
from ntf_utils.model import TrainingConfig
from ntf_utils.model._train import improves

KINDS = ("fourier", "siren")
DEFAULTS = {
    # Tancik et al.: 256 Gaussian features, 4 ReLU layers of 256; lr 1e-3 for their image tasks
    "fourier": {"lr": 1e-3, "hidden_width": 256, "hidden_layers": 4, "sigma": 4.0, "n_features": 256},
    # Sitzmann et al.: w0 = 30, 256-wide sine layers, lr 1e-4
    "siren": {"lr": 1e-4, "hidden_width": 256, "hidden_layers": 3, "w0": 30.0},
}


# ------------------------------------------------------------------------------------------------
# data handling shared by all three
# ------------------------------------------------------------------------------------------------
@dataclass
class MinMaxScaler:
    """Per-axis affine map of the training coordinates' bounding box onto ``[-1, 1]``."""

    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def fit(cls, coords: np.ndarray) -> MinMaxScaler:
        coords = np.asarray(coords, dtype=np.float64)
        return cls(lo=coords.min(0), hi=coords.max(0))

    def transform(self, coords) -> np.ndarray:
        coords = np.asarray(coords, dtype=np.float64)
        width = np.where(self.hi > self.lo, self.hi - self.lo, 1.0)  # a flat axis maps to -1
        return (2.0 * (coords - self.lo) / width - 1.0).astype(np.float32)


def _values(adata, layer: str | None) -> np.ndarray:
    m = adata.X if layer is None else adata.layers[layer]
    m = m.toarray() if sp.issparse(m) else np.asarray(m)
    return np.asarray(m, dtype=np.float32)


def _coords(adata, spatial_key: str) -> np.ndarray:
    if spatial_key not in adata.obsm:
        raise KeyError(f"obsm[{spatial_key!r}] not found; stack the sections with ntf_utils.pp.stack_sections")
    return np.asarray(adata.obsm[spatial_key], dtype=np.float64)[:, :3]


def _standardise(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = values.mean(0)
    std = values.std(0)
    return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def _gene_index(genes: list[str], wanted) -> np.ndarray:
    if wanted is None:
        return np.arange(len(genes))
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    pos = {g: i for i, g in enumerate(genes)}
    missing = [g for g in wanted if g not in pos]
    if missing:
        raise KeyError(f"{len(missing)} gene(s) not in the model, e.g. {missing[:5]}")
    return np.array([pos[g] for g in wanted], dtype=np.int64)


# ------------------------------------------------------------------------------------------------
# the two networks
# ------------------------------------------------------------------------------------------------
class FourierFeatureMLP(nn.Module):
    """Gaussian random Fourier features + ReLU MLP (Tancik et al. 2020).

    Parameters
    ----------
    n_input_dims
        Coordinate dimensions (3).
    n_outputs
        Output width (genes).
    n_features
        Number ``m`` of random frequencies; the encoding has ``2 m`` columns.
    sigma
        Standard deviation of the frequencies (inputs are in ``[-1, 1]``); the one knob that sets
        the bandwidth of the fit (too low blurs, too high memorises noise).
    hidden_width, hidden_layers
        The ReLU MLP after the encoding.
    seed
        Seed of ``B`` (the network weights use torch's global generator).
    """

    def __init__(self, n_input_dims: int, n_outputs: int, *, n_features: int = 256, sigma: float = 4.0,
                 hidden_width: int = 256, hidden_layers: int = 4, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("B", torch.randn(n_input_dims, n_features, generator=gen) * float(sigma))
        layers: list[nn.Module] = []
        width = 2 * n_features
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden_width), nn.ReLU()]
            width = hidden_width
        layers.append(nn.Linear(width, n_outputs))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, n_input_dims)`` coordinates in ``[-1, 1]`` -> ``(n, n_outputs)``."""
        proj = (2.0 * math.pi) * (x @ self.B)
        return self.mlp(torch.cat([torch.cos(proj), torch.sin(proj)], dim=1))


class SineLayer(nn.Module):
    """``sin(w0 (W x + b))`` with SIREN's initialisation."""

    def __init__(self, n_in: int, n_out: int, *, w0: float, first: bool) -> None:
        super().__init__()
        self.w0 = float(w0)
        self.linear = nn.Linear(n_in, n_out)
        with torch.no_grad():
            bound = 1.0 / n_in if first else math.sqrt(6.0 / n_in) / self.w0
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * self.linear(x))


class Siren(nn.Module):
    """Sinusoidal representation network (Sitzmann et al. 2020).

    Parameters
    ----------
    n_input_dims, n_outputs
        Coordinate dimensions and output width.
    w0
        Frequency of the first layer (30 in the paper; it sets the bandwidth, like ``sigma`` above).
    hidden_w0
        Frequency factor of the hidden layers (30 in the reference implementation; the init divides
        by it, so activations keep the same distribution).
    hidden_width, hidden_layers
        Sine layers after the first one.
    """

    def __init__(self, n_input_dims: int, n_outputs: int, *, w0: float = 30.0, hidden_w0: float = 30.0,
                 hidden_width: int = 256, hidden_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [SineLayer(n_input_dims, hidden_width, w0=w0, first=True)]
        for _ in range(hidden_layers):
            layers.append(SineLayer(hidden_width, hidden_width, w0=hidden_w0, first=False))
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(hidden_width, n_outputs)
        with torch.no_grad():
            bound = math.sqrt(6.0 / hidden_width) / hidden_w0
            self.out.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


# ------------------------------------------------------------------------------------------------
# fitted predictor
# ------------------------------------------------------------------------------------------------
class INRField:
    """A fitted coordinate network with the benchmarks' predictor interface.

    Attributes
    ----------
    name
        ``"fourier_mlp"`` or ``"siren"``.
    genes
        Output genes.
    history
        DataFrame ``step, seconds, cpu_seconds, loss`` (training wall / process-CPU seconds,
        evaluation time excluded) and ``score`` (whatever ``eval_callback`` returned) at the
        evaluation steps.
    info
        ``fit_seconds``, ``fit_cpu_seconds``, ``steps_run``, ``n_params`` and the hyper-parameters.
    """

    def __init__(self, name, network, scaler, genes, mean, std, history=None, info=None) -> None:
        self.name = name
        self.network = network.eval()
        self.scaler = scaler
        self.genes = list(genes)
        self.mean = mean
        self.std = std
        self.history = pd.DataFrame(history or [])
        self.info = dict(info or {})

    @torch.no_grad()
    def predict(self, coords, genes=None, *, batch_size: int = 32768) -> np.ndarray:
        """``(n, len(genes))`` float32 predictions at ``(n, 3)`` coordinates in original units."""
        idx = _gene_index(self.genes, genes)
        x = self.scaler.transform(np.asarray(coords, dtype=np.float64)[:, :3])
        was_training = self.network.training
        self.network.eval()
        out = np.empty((len(x), len(idx)), dtype=np.float32)
        for start in range(0, len(x), batch_size):
            raw = self.network(torch.from_numpy(x[start : start + batch_size])).numpy()
            out[start : start + len(raw)] = raw[:, idx] * self.std[idx] + self.mean[idx]
        self.network.train(was_training)
        return out

    def __repr__(self) -> str:
        return f"INRField({self.name}, {len(self.genes)} genes, {self.info.get('steps_run')} steps)"


def _lr_at(step: int, steps: int, lr: float) -> float:
    """NTF's schedule: linear warm-up over min(100, steps/10) steps, cosine decay to lr/20."""
    warmup = min(100, steps // 10)
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def build_network(kind: str, n_genes: int, *, seed: int = 0, **hyper) -> nn.Module:
    """The untrained network of ``kind`` with ``hyper`` overriding :data:`DEFAULTS`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    h = {**DEFAULTS[kind], **hyper}
    torch.manual_seed(seed)
    if kind == "fourier":
        return FourierFeatureMLP(3, n_genes, n_features=int(h["n_features"]), sigma=float(h["sigma"]),
                                 hidden_width=int(h["hidden_width"]), hidden_layers=int(h["hidden_layers"]),
                                 seed=seed)
    return Siren(3, n_genes, w0=float(h["w0"]), hidden_width=int(h["hidden_width"]),
                 hidden_layers=int(h["hidden_layers"]))


def fit_inr(
    train_adata,
    kind: str = "fourier",
    *,
    layer: str | None = None,
    spatial_key: str = "spatial_3d",
    steps: int = 2000,
    batch_size: int = 4096,
    seed: int = 0,
    lr: float | None = None,
    time_budget: float | None = None,
    eval_callback: Callable | None = None,
    eval_every: int = 100,
    stop_at: float | None = None,
    validation_fraction: float = 0.05,
    patience: int = TrainingConfig.patience,
    val_every: int = 100,
    **hyper,
) -> INRField:
    """Train a Fourier-feature MLP or a SIREN on stacked training sections, in one call.

    Parameters
    ----------
    train_adata
        Stacked training sections: ``obsm[spatial_key]`` (x, y, z), values in ``X`` or ``layer``.
    kind
        ``"fourier"`` (:class:`FourierFeatureMLP`) or ``"siren"`` (:class:`Siren`).
    layer
        Layer with the (log-normalised) values; None uses ``X``.
    steps, batch_size
        Adam steps and cells per minibatch (sampled uniformly with replacement across steps).
    seed
        Seeds the weights, ``B`` and the minibatches.
    lr
        Peak learning rate (default: the paper's, see :data:`DEFAULTS`).
    time_budget
        Stop after this many training seconds (evaluation time excluded).
    eval_callback
        ``f(model, step, seconds) -> float | None``, called every ``eval_every`` steps and at the
        end with the current :class:`INRField` (shares the live network); its return value is
        recorded as ``score`` in ``history``. Its own run time is not counted in ``seconds``.
    stop_at
        Stop as soon as a callback score reaches this value (time-to-accuracy runs).
    validation_fraction, patience, val_every
        Early stopping exactly as ``ntf_utils.tl.fit`` does by default: this fraction of the training
        cells (at random, seeded) is held out, its MSE is checked every ``val_every`` steps, training
        stops after ``patience`` checks without improvement and the best weights are kept.
        ``validation_fraction=0`` trains on all cells for all ``steps``.
    **hyper
        ``sigma``, ``n_features`` (Fourier), ``w0`` (SIREN), ``hidden_width``, ``hidden_layers``.

    Returns
    -------
    :class:`INRField` with the weights of the best validation check (the final weights without
    validation); never selected on the callback's scores.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    lr = float(DEFAULTS[kind]["lr"] if lr is None else lr)
    coords = _coords(train_adata, spatial_key)
    values = _values(train_adata, layer)
    scaler = MinMaxScaler.fit(coords)
    mean, std = _standardise(values)
    x = torch.from_numpy(scaler.transform(coords))
    y = torch.from_numpy((values - mean) / std)
    x_val = y_val = None
    if validation_fraction > 0 and len(x) >= 200:
        perm = np.random.default_rng(seed).permutation(len(x))
        n_val = max(1, int(round(validation_fraction * len(x))))
        val_idx, fit_idx = torch.from_numpy(np.sort(perm[:n_val])), torch.from_numpy(np.sort(perm[n_val:]))
        x_val, y_val, x, y = x[val_idx], y[val_idx], x[fit_idx], y[fit_idx]
    network = build_network(kind, values.shape[1], seed=seed, **hyper)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed + 1)
    name = "fourier_mlp" if kind == "fourier" else "siren"
    used = {**DEFAULTS[kind], **hyper, "lr": lr, "batch_size": batch_size, "steps": steps}
    model = INRField(name, network, scaler, list(map(str, train_adata.var_names)), mean, std, info=used)
    history: list[dict] = []
    n = len(x)
    seconds, cpu, step = 0.0, 0.0, 0
    best_val, best_state, bad = float("inf"), None, 0
    network.train()
    tic, cpu_tic = time.perf_counter(), time.process_time()
    while step < steps:
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, steps, lr)
        idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
        loss = torch.mean((network(x[idx]) - y[idx]) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        record = {"step": step, "loss": float(loss.detach())}
        done = step == steps
        if x_val is not None and (step % val_every == 0 or done):
            with torch.no_grad():
                network.eval()
                val = float(torch.mean((network(x_val) - y_val) ** 2))
                network.train()
            record["val_loss"] = val
            if improves(val, best_val):
                best_val, bad = val, 0
                best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
            else:
                bad += 1
                done = done or bad >= patience
        if time_budget is not None and seconds + time.perf_counter() - tic >= time_budget:
            done = True
        if eval_callback is not None and (step % eval_every == 0 or done):
            seconds += time.perf_counter() - tic
            cpu += time.process_time() - cpu_tic
            record.update(seconds=seconds, cpu_seconds=cpu)
            network.eval()
            score = eval_callback(model, step, seconds)
            network.train()
            if score is not None:
                record["score"] = float(score)
                if stop_at is not None and score >= stop_at:
                    done = True
            tic, cpu_tic = time.perf_counter(), time.process_time()
        else:
            record.update(seconds=seconds + time.perf_counter() - tic, cpu_seconds=cpu + time.process_time() - cpu_tic)
        history.append(record)
        if done:
            break
    seconds += time.perf_counter() - tic
    cpu += time.process_time() - cpu_tic
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    model.history = pd.DataFrame(history)
    model.info.update({"fit_seconds": seconds, "fit_cpu_seconds": cpu, "steps_run": step,
                       "best_val_loss": best_val if best_state is not None else None,
                       "n_params": int(sum(p.numel() for p in network.parameters()))})
    return model


# ------------------------------------------------------------------------------------------------
# tuning on the training sections only
# ------------------------------------------------------------------------------------------------
def validation_split(train_adata, *, section_key: str = "section", seed: int = 0):
    """Split TRAINING sections into (fit, validation) for tuning.

    Holds out every other interior training section (at least one). Returns ``None`` when there
    is no interior section (two training sections): no section can then be held out, and random
    held-out cells would tune the in-plane fit instead of the interpolation between sections.
    """
    labels = train_adata.obs[section_key].astype(str).to_numpy()
    z = np.asarray(train_adata.obs["z"], dtype=float)
    order = sorted(set(labels), key=lambda s: float(z[labels == s][0]))
    interior = order[1:-1]
    if not interior:
        return None
    is_val = np.isin(labels, list(interior[::2]))
    return train_adata[~is_val].copy(), train_adata[is_val].copy()


def heldout_pearson(model, test, *, layer: str | None = None, spatial_key: str = "spatial_3d",
                    section_key: str = "section") -> float:
    """Median over (section, gene) of the per-gene Pearson correlation on ``test`` (NaN skipped)."""
    coords = _coords(test, spatial_key)
    truth = _values(test, layer)
    pred = model.predict(coords, genes=list(map(str, test.var_names)))
    labels = test.obs[section_key].astype(str).to_numpy() if section_key in test.obs else np.zeros(len(test))
    scores = [metrics.pearson_per_gene(pred[labels == s], truth[labels == s]) for s in np.unique(labels)]
    allv = np.concatenate(scores)
    return float(np.nanmedian(allv)) if np.isfinite(allv).any() else float("nan")


def tune_inr(
    train_adata,
    kind: str = "fourier",
    *,
    layer: str | None = None,
    grid: dict[str, Sequence[float]] | None = None,
    steps: int = 600,
    batch_size: int = 4096,
    seed: int = 0,
    **fixed,
) -> tuple[dict, pd.DataFrame]:
    """Choose the bandwidth (``sigma`` / ``w0``) and then ``lr`` on a split of the training sections.

    Coordinate-wise search: the bandwidth grid at the default ``lr``, then the ``lr`` grid at the
    best bandwidth. Score: :func:`heldout_pearson` on :func:`validation_split`'s validation part.
    With only two training sections nothing can be held out: the smoothest bandwidth of the grid is
    returned untuned (and says so in the table).

    Returns
    -------
    ``(best hyper-parameters, table of every trial)``.
    """
    if grid is None:
        grid = default_grid(kind)
    best = dict(fixed)
    split = validation_split(train_adata, seed=seed)
    if split is None:
        # two training sections: nothing to validate on; take the smoothest bandwidth of the grid
        # (the safest prior for bridging one wide gap) and the given or default learning rate
        band = "sigma" if kind == "fourier" else "w0"
        best[band] = min(grid[band])
        row = {"kind": kind, **best, "val_pearson": float("nan"), "seconds": 0.0,
               "note": "untuned: only two training sections, smoothest bandwidth of the grid"}
        return best, pd.DataFrame([row])
    fit_part, val_part = split
    rows = []
    for name, values in grid.items():
        scores = {}
        for v in values:
            trial = {**best, name: v}
            model = fit_inr(fit_part, kind, layer=layer, steps=steps, batch_size=batch_size, seed=seed,
                            validation_fraction=0.0, **trial)
            score = heldout_pearson(model, val_part, layer=layer)
            scores[v] = score if np.isfinite(score) else -np.inf
            rows.append({"kind": kind, **trial, "val_pearson": score, "seconds": model.info["fit_seconds"]})
        best[name] = max(scores, key=scores.get)
    return best, pd.DataFrame(rows)


def default_grid(kind: str) -> dict[str, list[float]]:
    """The search grids: bandwidth first, then learning rate."""
    if kind == "fourier":
        return {"sigma": [0.125, 0.25, 0.5, 1.0, 2.0, 4.0], "lr": [3e-4, 1e-3, 3e-3]}
    return {"w0": [1.0, 3.0, 10.0, 30.0], "lr": [3e-5, 1e-4, 3e-4]}


# ------------------------------------------------------------------------------------------------
# Gaussian process on principal components
# ------------------------------------------------------------------------------------------------
class GPBaseline:
    """PCA + multi-output Gaussian-process regression (see :func:`gp_baseline`)."""

    name = "gp"

    def __init__(self, scaler, pca, gp, genes, info) -> None:
        self.scaler, self.pca, self.gp = scaler, pca, gp
        self.genes = list(genes)
        self.info = info

    def predict(self, coords, genes=None, *, batch_size: int = 20000) -> np.ndarray:
        """``(n, len(genes))`` float32 predictions at ``(n, 3)`` coordinates in original units."""
        idx = _gene_index(self.genes, genes)
        x = self.scaler.transform(np.asarray(coords, dtype=np.float64)[:, :3])
        out = np.empty((len(x), len(idx)), dtype=np.float32)
        for start in range(0, len(x), batch_size):
            scores = self.gp.predict(x[start : start + batch_size])
            scores = scores.reshape(len(scores), -1)
            out[start : start + len(scores)] = self.pca.inverse_transform(scores)[:, idx]
        return out


def gp_baseline(
    train_adata,
    *,
    layer: str | None = None,
    spatial_key: str = "spatial_3d",
    n_components: int = 20,
    max_cells: int = 2000,
    seed: int = 0,
    n_restarts: int = 0,
) -> GPBaseline:
    """Fit the GP baseline: PCA to ``n_components``, GP regression of the scores on coordinates.

    Kernel: ``C * RBF(anisotropic length scales, one per axis) + White``, hyper-parameters by
    maximising the marginal likelihood (scikit-learn's L-BFGS, ``n_restarts`` extra starts),
    ``normalize_y=True``, on a random subsample of at most ``max_cells`` training cells (exact GP
    cost grows as n^3). Coordinates are min-max scaled to ``[-1, 1]`` like the neural baselines.
    """
    from sklearn.decomposition import PCA
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, WhiteKernel
    from sklearn.gaussian_process.kernels import ConstantKernel as C

    tic = time.perf_counter()
    coords = _coords(train_adata, spatial_key)
    values = _values(train_adata, layer)
    scaler = MinMaxScaler.fit(coords)
    k = int(min(n_components, values.shape[1], len(values) - 1))
    pca = PCA(n_components=k, random_state=seed).fit(values)
    rng = np.random.default_rng(seed)
    sub = rng.choice(len(values), min(max_cells, len(values)), replace=False)
    x = scaler.transform(coords[sub])
    y = pca.transform(values[sub])
    kernel = C(1.0, (1e-3, 1e3)) * RBF(length_scale=[0.3, 0.3, 0.3], length_scale_bounds=(1e-3, 1e2)) \
        + WhiteKernel(0.1, (1e-5, 1e1))
    gp = GaussianProcessRegressor(kernel=kernel, normalize_y=True, n_restarts_optimizer=n_restarts,
                                  random_state=seed)
    gp.fit(x, y)
    info = {"fit_seconds": time.perf_counter() - tic, "n_components": k, "n_cells_used": len(sub),
            "kernel": str(gp.kernel_)}
    return GPBaseline(scaler, pca, gp, list(map(str, train_adata.var_names)), info)

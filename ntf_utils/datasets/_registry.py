"""Where data lives: the shipped subsets, the full local copies, and checksum-verified downloads.

Three places, in this order of preference for ``source="auto"``:

1. the full data in the shared folder (``$NTF_SHARED_DATA``, default ``<repo>/../shared/data``)
   or already downloaded into the cache (``$NTF_DATA_DIR``, default ``~/.cache/ntf_utils``);
2. the small subsets shipped in ``<repo>/data`` (gzip'd CSV/TSV, same file layout).

``source="full"`` downloads missing full files from the original public URLs in
``data/registry.json`` with :mod:`pooch` and checks their sha256.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

__all__ = ["registry", "fetch", "download", "DataChecksumError"]

SOURCES = ("auto", "shipped", "full")


class DataChecksumError(ValueError):
    """A downloaded file's sha256 differs from the one recorded in the registry."""


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def shipped_dir() -> Path:
    """Folder of the shipped subsets and ``registry.json`` (``<repo>/data``)."""
    return _repo_root() / "data"


def shared_dir() -> Path:
    """Folder of the full local copies: ``$NTF_SHARED_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get("NTF_SHARED_DATA")
    return Path(env).expanduser() if env else _repo_root().parent / "shared" / "data"


def cache_dir() -> Path:
    """Download cache: ``$NTF_DATA_DIR`` or ``~/.cache/ntf_utils``."""
    env = os.environ.get("NTF_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ntf_utils"


def _load_registry() -> dict:
    path = shipped_dir() / "registry.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"the data registry {path} is missing; ntf_utils.datasets needs the repository's data/ folder "
            "(install from a source checkout, or rebuild it with `python data/make_shipped.py`)."
        )
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def registry(kind: str | None = None) -> pd.DataFrame:
    """The data registry as a table.

    Parameters
    ----------
    kind
        ``"full"`` (files of the complete datasets, with their original public URL), ``"shipped"``
        (the small subsets in the repository's ``data/`` folder) or ``None`` for both.

    Returns
    -------
    pandas.DataFrame
        One row per file with columns ``dataset`` (folder name), ``kind``, ``path`` (relative to
        the data folder), ``url`` (empty for shipped files), ``sha256``, ``size`` (bytes),
        ``loader`` (the ``ntf_utils.datasets`` function that reads it), ``license`` and ``citation``.
    """
    reg = _load_registry()
    df = pd.DataFrame(reg["files"])
    meta = pd.DataFrame.from_dict(reg["datasets"], orient="index")
    df = df.join(meta[["loader", "license", "citation"]], on="dataset")
    if kind is not None:
        if kind not in ("full", "shipped"):
            raise ValueError(f"kind must be 'full', 'shipped' or None, got {kind!r}.")
        df = df[df["kind"] == kind].reset_index(drop=True)
    return df


def _dataset_info(dataset: str) -> dict:
    reg = _load_registry()
    if dataset not in reg["datasets"]:
        raise KeyError(f"unknown dataset {dataset!r}; known datasets: {sorted(reg['datasets'])}.")
    return dict(reg["datasets"][dataset])


def _full_entries(dataset: str) -> dict[str, dict]:
    """Registry entries of a dataset's full files, keyed by path."""
    return {
        f["path"]: f for f in _load_registry()["files"] if f["dataset"] == dataset and f["kind"] == "full"
    }


class _LocalOrRemoteDownloader:
    """pooch downloader that also understands ``file://`` URLs (used for offline tests and mirrors)."""

    def __call__(self, url, output_file, pooch_obj, check_only=False):
        parsed = urlparse(url)
        if parsed.scheme == "file":
            src = Path(unquote(parsed.path))
            if check_only:
                return src.is_file()
            if not src.is_file():
                raise FileNotFoundError(f"{url} does not exist.")
            if hasattr(output_file, "write"):
                with open(src, "rb") as fh:
                    shutil.copyfileobj(fh, output_file)
            else:
                shutil.copyfile(src, output_file)
            return None
        import pooch

        return pooch.downloaders.choose_downloader(url)(url, output_file, pooch_obj, check_only=check_only)


def download(url: str, sha256: str, *, fname: str | os.PathLike | None = None, data_dir=None) -> Path:
    """Download one file with :mod:`pooch` into the cache and verify its sha256.

    Parameters
    ----------
    url
        ``https://``, ``http://``, ``ftp://`` or ``file://`` URL.
    sha256
        Expected sha256 (hex digest) of the file.
    fname
        Path of the file inside ``data_dir`` (may contain folders); default: the URL's file name.
    data_dir
        Cache folder; default ``$NTF_DATA_DIR`` or ``~/.cache/ntf_utils``.

    Returns
    -------
    pathlib.Path
        The local, verified file. An existing file with the right checksum is not downloaded again.

    Raises
    ------
    DataChecksumError
        If the downloaded file's sha256 differs from ``sha256`` (the file is deleted).
    """
    import pooch

    root = Path(data_dir).expanduser() if data_dir is not None else cache_dir()
    rel = Path(fname) if fname is not None else Path(unquote(urlparse(url).path)).name
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        out = pooch.retrieve(
            url,
            known_hash=f"sha256:{sha256}",
            fname=target.name,
            path=target.parent,
            downloader=_LocalOrRemoteDownloader(),
            progressbar=False,
        )
    except ValueError as err:
        if "hash" in str(err).lower():
            raise DataChecksumError(
                f"checksum mismatch for {url} (saved as {target}): {err} The source changed or the download was "
                "corrupted; retry, or if the change is intended rebuild data/registry.json with "
                "`python data/make_shipped.py`."
            ) from err
        raise
    return Path(out)


def fetch(dataset: str, paths=None, *, data_dir=None) -> Path:
    """Download a full dataset (or some of its files) from its original URLs into the cache.

    Parameters
    ----------
    dataset
        Folder name of the dataset, e.g. ``"bdtnp_drosophila_3d"`` (see :func:`registry`).
    paths
        Registry paths to fetch (default: all files of the dataset).
    data_dir
        Cache folder; default ``$NTF_DATA_DIR`` or ``~/.cache/ntf_utils``.

    Returns
    -------
    pathlib.Path
        The cache folder; files keep their registry paths below it.
    """
    entries = _full_entries(dataset)
    if not entries:
        _dataset_info(dataset)  # raises for unknown names
        raise KeyError(f"the registry has no downloadable files for {dataset!r}.")
    wanted = list(entries) if paths is None else list(paths)
    unknown = [p for p in wanted if p not in entries]
    if unknown:
        raise KeyError(
            f"{unknown} are not files of {dataset!r} in the registry; see ntf_utils.datasets.registry()."
        )
    root = Path(data_dir).expanduser() if data_dir is not None else cache_dir()
    for p in wanted:
        download(entries[p]["url"], entries[p]["sha256"], fname=p, data_dir=root)
    return root


def _shipped_name(rel: str) -> str:
    return rel if rel.endswith(".gz") else rel + ".gz"


def resolve(dataset: str, required, optional=(), source: str = "auto"):
    """Find a dataset's files.

    Returns ``(paths, used)``: ``paths`` maps each requested registry path to a local file (``None``
    for a missing optional file) and ``used`` is ``"full"`` or ``"shipped"``.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}.")
    required, optional = list(required), list(optional)
    if source in ("auto", "full"):
        for root in (shared_dir(), cache_dir()):
            if all((root / r).is_file() for r in required):
                paths = {r: root / r for r in required}
                paths.update({o: (root / o if (root / o).is_file() else None) for o in optional})
                return paths, "full"
        if source == "full":
            entries = _full_entries(dataset)
            missing = [r for r in required if r not in entries]
            if missing:
                raise KeyError(f"{missing} are not in the registry of {dataset!r}; nothing to download.")
            root = fetch(dataset, required + [o for o in optional if o in entries])
            paths = {r: root / r for r in required}
            paths.update({o: (root / o if (root / o).is_file() else None) for o in optional})
            return paths, "full"
    root = shipped_dir()
    missing = [r for r in required if not (root / _shipped_name(r)).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the shipped subset of {dataset!r} in {root} lacks {missing[:3]}{' ...' if len(missing) > 3 else ''}"
            f" and the full data is not in {shared_dir()} or {cache_dir()}. Use source='full' to download it "
            "(or set NTF_SHARED_DATA to a folder with the full copies)."
        )
    paths = {r: root / _shipped_name(r) for r in required}
    paths.update(
        {o: (root / _shipped_name(o) if (root / _shipped_name(o)).is_file() else None) for o in optional}
    )
    return paths, "shipped"

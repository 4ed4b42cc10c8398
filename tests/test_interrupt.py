"""Interruption safety, safe loading and cross-process reproducibility.

Fits run in subprocesses (``tests/fit_child.py``) that are killed with SIGKILL: mid-run, and in the
middle of checkpoint writes. A restarted fit must resume by itself from the last complete checkpoint
and end with exactly the model of an uninterrupted run; a half-written checkpoint must never be
read. Damaged or malicious files must give a clear ``ValueError`` and execute nothing.
"""

from __future__ import annotations

import builtins
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ntf_utils import NTFConfig, NTFField, pp, tl
from ntf_utils.datasets import synthetic_embryo
from ntf_utils.model import _checkpoint as ckpt

CHILD = Path(__file__).with_name("fit_child.py")
STEPS = 60
SEED = 3
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


def _env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    return env


def _command(out: Path, *args) -> list[str]:
    return [sys.executable, str(CHILD), str(out), "--seed", str(SEED), "--steps", str(STEPS), *map(str, args)]


def _run(out: Path, *args) -> dict:
    """Run a fit to completion in a fresh process; returns its run.json."""
    subprocess.run(_command(out, *args), check=True, timeout=600, env=_env())
    return json.loads((out / "run.json").read_text())


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 300.0) -> bool:
    """Poll ``condition()`` every 5 ms; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)
    return True


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> np.ndarray:
    """Predictions of an uninterrupted run (own process, no checkpoints)."""
    out = tmp_path_factory.mktemp("reference")
    info = _run(out)
    assert info["steps_trained"] == STEPS and info["threads"] == 1
    return np.load(out / "pred.npy")


def test_sigkill_mid_run_resumes_to_the_same_model(tmp_path, reference):
    ck = tmp_path / "ck"
    proc = subprocess.Popen(_command(tmp_path / "killed", "--checkpoint", ck, "--step-sleep", 0.05), env=_env())
    try:
        assert _wait_for(lambda: (ck / ckpt.TRAINING_CHECKPOINT).exists(), proc, "the first checkpoint"), (
            "the fit ended before its first checkpoint"
        )
        time.sleep(0.3)  # a few more steps: the kill lands between two checkpoints
    finally:
        _kill(proc)
    assert proc.returncode == -signal.SIGKILL
    step = torch.load(ck / ckpt.TRAINING_CHECKPOINT, weights_only=True)["state"]["step"]
    assert 0 < step < STEPS, "the kill must land mid-run"

    info = _run(tmp_path / "resumed", "--checkpoint", ck)  # same command: it resumes by itself
    assert info["steps_trained"] == STEPS - step, "the restarted fit must continue, not start over"
    assert info["steps_run"] == STEPS
    np.testing.assert_array_equal(np.load(tmp_path / "resumed" / "pred.npy"), reference)


def test_sigkill_during_checkpoint_writes_never_exposes_a_partial_file(tmp_path, reference):
    ck = tmp_path / "ck"
    rng = random.Random(0)
    kills_mid_write = 0
    for attempt in range(3):
        proc = subprocess.Popen(_command(tmp_path / f"try{attempt}", "--checkpoint", ck, "--slow-write", 0.4),
                                env=_env())
        try:
            writing = _wait_for(lambda: ck.exists() and any(ck.glob(".*.tmp")), proc, "a checkpoint write")
            time.sleep(rng.uniform(0.0, 0.35))  # somewhere inside the (slow) write
        finally:
            _kill(proc)
        leftovers = list(ck.glob(".*.tmp"))
        kills_mid_write += bool(writing and leftovers)
        # what the directory exposes is always complete, loadable with weights_only=True
        if (ck / ckpt.TRAINING_CHECKPOINT).exists():
            payload = torch.load(ck / ckpt.TRAINING_CHECKPOINT, weights_only=True)
            assert 0 < payload["state"]["step"] < STEPS
        # make any half-written temporary poisonous: if a resume ever read one, it would fail
        for tmp in leftovers:
            tmp.write_bytes(b"not a checkpoint")
    assert kills_mid_write >= 1, "no kill landed inside a checkpoint write"

    info = _run(tmp_path / "final", "--checkpoint", ck)
    assert info["steps_run"] == STEPS
    np.testing.assert_array_equal(np.load(tmp_path / "final" / "pred.npy"), reference)
    assert not list(ck.glob(".*.tmp")), "stale temporaries of killed writers are removed on resume"


def test_same_seed_is_bitwise_identical_across_processes(tmp_path, reference):
    """A second process (torch threads set explicitly to 1 in the child) gives the same predictions."""
    info = _run(tmp_path / "again")
    assert info["threads"] == 1
    np.testing.assert_array_equal(np.load(tmp_path / "again" / "pred.npy"), reference)


# ----------------------------------------------------------------------------- safe loading
@pytest.fixture(scope="module")
def small_fit(tmp_path_factory):
    adata = synthetic_embryo(n_sections=3, cells_per_section=40, n_genes=3, seed=0)
    pp.log_normalize(adata, layer="counts")
    field = tl.fit(adata, layer="lognorm", config=NTFConfig(training={"steps": 5, "batch_size": 64}), progress=False, device="cpu")
    return adata, field


def _flip(path: Path, position: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[position] ^= 0x20
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("where", ["header_length", "json", "tensor", "truncated"])
def test_tampered_field_file_gives_a_clear_error(small_fit, tmp_path, where):
    _, field = small_fit
    path = field.save(tmp_path / "f.ntf")
    header = int.from_bytes(path.read_bytes()[:8], "little")
    if where == "header_length":
        _flip(path, 2)
    elif where == "json":
        text = path.read_bytes()[8 : 8 + header]
        _flip(path, 8 + text.index(b'"genes') + 1)  # "genes" -> "Genes": valid JSON, wrong content
    elif where == "tensor":
        _flip(path, path.stat().st_size - 3)
    else:
        path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="f.ntf"):
        NTFField.load(path)


class _Marker:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_malicious_pickles_are_never_executed(small_fit, tmp_path):
    adata, _ = small_fit
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Marker(control)))  # the payload is live: plain unpickling runs it
    assert control.exists()

    marker = tmp_path / "pwned"
    evil = pickle.dumps({"state": _Marker(marker)})
    # a raw pickle and a torch.save zip, each disguised as a training checkpoint
    for i, writer in enumerate([lambda p: p.write_bytes(evil), lambda p: torch.save({"state": _Marker(marker)}, p)]):
        ck = tmp_path / f"ck{i}"
        ck.mkdir()
        writer(ck / ckpt.TRAINING_CHECKPOINT)
        with pytest.raises(ValueError, match="cannot be read"):
            tl.fit(adata, layer="lognorm", config=NTFConfig(training={"steps": 3, "batch_size": 64}), progress=False,
                   checkpoint_dir=ck)
    # and as a saved field
    (tmp_path / "f.ntf").write_bytes(evil)
    with pytest.raises(ValueError, match="not a readable"):
        NTFField.load(tmp_path / "f.ntf")
    assert not marker.exists(), "loading executed code from a file"


def test_checkpoint_of_another_run_is_an_error_and_a_missing_note_is_not(small_fit, tmp_path):
    adata, _ = small_fit
    config = NTFConfig(training={"steps": 6, "batch_size": 64, "checkpoint_every": 3})
    ck = tmp_path / "ck"
    first = tl.fit(adata, layer="lognorm", config=config, progress=False, checkpoint_dir=ck, seed=1)
    # a kill between the checkpoint and its JSON note leaves no note: still the same run
    (ck / ckpt.TRAINING_FINGERPRINT).unlink()
    again = tl.fit(adata, layer="lognorm", config=config, progress=False, checkpoint_dir=ck, seed=1)
    coords = adata.obsm["spatial_3d"]
    np.testing.assert_array_equal(again.predict(coords), first.predict(coords))
    with pytest.raises(ValueError, match="different run"):
        tl.fit(adata, layer="lognorm", config=config.replace(training={"steps": 7}), progress=False, checkpoint_dir=ck, seed=1)


def test_saved_files_are_readable_like_plain_files(small_fit, tmp_path):
    """Atomic writes keep the umask's permissions (not the 0600 of a private temporary file)."""
    _, field = small_fit
    old = os.umask(0o022)
    try:
        path = field.save(tmp_path / "f.ntf")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644

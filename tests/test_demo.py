"""The README's main job, `python -m ntf_utils.demo --out DIR --quick`, end to end."""

import re

import pandas as pd
import pytest

from ntf_utils import demo

VIEWS = ("cells_3d", "volume_3d", "slice_plane", "domains_3d", "gradient_arrows", "virtual_vs_real")


@pytest.fixture(scope="module")
def out(tmp_path_factory, monkeypatch_module):
    path = tmp_path_factory.mktemp("ntf_demo")
    # shipped data only: point the shared-data folder somewhere empty, as on a fresh clone
    monkeypatch_module.setenv("NTF_SHARED_DATA", str(path / "no_shared_data"))
    monkeypatch_module.setenv("NTF_DATA_DIR", str(path / "no_cache"))
    assert demo.main(["--out", str(path), "--quick"]) == 0
    return path


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_writes_views_summary_and_index(out):
    for name in demo.DATASETS:
        for view in VIEWS:
            path = out / f"{name}_{view}.html"
            assert path.is_file(), path
            text = path.read_text(encoding="utf-8")
            assert 'class="plotly-graph-div"' in text
            assert "plotly.min.js" in text  # the shared copy written next to the views
    assert (out / "plotly.min.js").stat().st_size > 1_000_000

    index = (out / "index.html").read_text(encoding="utf-8")
    links = set(re.findall(r"href='([^']+)'", index))
    assert {f"{d}_{v}.html" for d in demo.DATASETS for v in VIEWS} <= links
    assert {"summary.csv", "evaluation.csv"} <= links


def test_summary_has_every_method_and_sane_scores(out):
    summary = pd.read_csv(out / "summary.csv")
    for name in demo.DATASETS:
        rows = summary[summary["dataset"] == name]
        assert sorted(rows["method"]) == sorted(demo.METHODS)
        assert (rows["n_sections"] > 0).all()
    assert summary["pearson_median"].between(-1, 1).all()
    # even a quick field predicts held-out sections far better than chance
    assert (summary.loc[summary["method"] == "ntf", "pearson_median"] > 0.3).all()
    evaluation = pd.read_csv(out / "evaluation.csv")
    assert set(evaluation["method"]) == set(demo.METHODS)


def test_bad_dataset_name(tmp_path):
    with pytest.raises(ValueError, match="datasets must be"):
        demo.run(tmp_path, quick=True, datasets=["nope"])


def test_quick_mode_from_environment(monkeypatch):
    monkeypatch.setenv("NTF_QUICK", "1")
    assert demo.quick_mode() is True
    monkeypatch.setenv("NTF_QUICK", "0")
    assert demo.quick_mode() is False
    assert demo.quick_mode(True) is True

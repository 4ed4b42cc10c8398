"""Export figures: standalone HTML (plotly.js embedded, works offline) and PNG via kaleido + Chromium."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

__all__ = ["save_html", "save_png", "find_browser"]

#: Browser executables tried, in order, when ``BROWSER_PATH`` is not set.
_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_INSTALL_HINT = (
    "PNG export needs kaleido >= 1 (`pip install 'kaleido>=1'`) and a Chrome/Chromium browser: on "
    "Debian/Ubuntu `apt-get install chromium`, or `plotly_get_chrome` to download one; point kaleido at "
    "a browser elsewhere with the BROWSER_PATH environment variable."
)


def _as_figure(fig):
    import plotly.graph_objects as go
    from plotly.basedatatypes import BaseFigure

    if isinstance(fig, go.Figure):
        return fig
    if isinstance(fig, (BaseFigure, dict)):  # FigureWidget, or a figure dict
        return go.Figure(fig)
    if hasattr(fig, "figure"):  # the box returned by pl.explore
        return go.Figure(fig.figure)
    raise TypeError(f"expected a plotly Figure (or a figure dict), got {type(fig).__name__}.")


def save_html(fig, path, *, include_plotlyjs=True, full_html: bool = True) -> Path:
    """Write a figure to a standalone HTML file.

    Parameters
    ----------
    fig
        A ``plotly.graph_objects.Figure`` (or FigureWidget, figure dict, or the box from ``pl.explore``).
    path
        Output file; parent directories are created.
    include_plotlyjs
        ``True`` (default) embeds plotly.js (~4.5 MB) so the file opens offline; ``"cdn"`` links it
        from the CDN instead (small file, needs the internet), as in ``Figure.write_html``.
    full_html
        Write a full ``<html>`` document (``False``: a ``<div>`` to embed in another page).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    fig = _as_figure(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # auto_play=False: a slice_plane figure opens on its starting plane instead of sweeping through frames.
    fig.write_html(
        str(path), include_plotlyjs=include_plotlyjs, full_html=full_html, auto_open=False, auto_play=False
    )
    return path


def find_browser() -> str | None:
    """The Chrome/Chromium kaleido should use: ``$BROWSER_PATH`` if set, else the first on ``PATH``."""
    env = os.environ.get("BROWSER_PATH")
    if env:
        return env
    for name in _BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


@contextlib.contextmanager
def _browser_env(browser: str | None):
    """Set ``BROWSER_PATH`` (the variable kaleido 1.x / choreographer read) for the duration of the call."""
    old = os.environ.get("BROWSER_PATH")
    try:
        if browser and not old:
            os.environ["BROWSER_PATH"] = browser
        yield
    finally:
        if old is None:
            os.environ.pop("BROWSER_PATH", None)
        else:
            os.environ["BROWSER_PATH"] = old


def save_png(fig, path, *, width: int = 1000, height: int = 800, scale: float = 1) -> Path:
    """Write a figure to PNG with kaleido (which drives a headless Chrome/Chromium; 3D via SwiftShader).

    Parameters
    ----------
    fig
        A ``plotly.graph_objects.Figure`` (or FigureWidget, figure dict, or the box from ``pl.explore``).
    path
        Output ``.png`` file; parent directories are created.
    width, height
        Size in layout pixels.
    scale
        Pixel density multiplier (2 for a crisp image at the same layout size).

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    RuntimeError
        When kaleido (>= 1) or a Chrome/Chromium browser is missing, or the export fails; the message
        says what to install. The browser is ``$BROWSER_PATH`` if set, else ``chromium`` (Debian's
        ``/usr/bin/chromium``) or Chrome found on ``PATH``.
    """
    fig = _as_figure(fig)
    try:
        from importlib.metadata import version

        import kaleido  # noqa: F401

        major = int(version("kaleido").split(".")[0])
    except ImportError as err:
        raise RuntimeError(f"kaleido is not installed. {_INSTALL_HINT}") from err
    if major < 1:
        raise RuntimeError(f"kaleido {version('kaleido')} is too old. {_INSTALL_HINT}")
    browser = find_browser()
    if browser is None:
        raise RuntimeError(f"no Chrome/Chromium browser found. {_INSTALL_HINT}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _browser_env(browser):
        try:
            img = fig.to_image(format="png", width=int(width), height=int(height), scale=scale)
        except Exception as err:  # kaleido/choreographer raise many kinds; wrap them with the fix
            raise RuntimeError(
                f"PNG export with kaleido failed ({type(err).__name__}: {err}). {_INSTALL_HINT}"
            ) from err
    path.write_bytes(img)
    return path

"""Plots: interactive Plotly 3D views, widgets, HTML/PNG export."""

__all__: list[str] = []

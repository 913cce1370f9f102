"""Plots and the self-contained HTML report of a budget sweep (matplotlib imported lazily)."""

from tunewise.report.html import render_html, write_html, write_report
from tunewise.report.plots import plot_all

__all__ = ["plot_all", "render_html", "write_html", "write_report"]

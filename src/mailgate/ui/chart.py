"""A bar chart as inline SVG, drawn on the server (pure: values in, markup out).

No chart library and no script: the page's CSP allows neither inline script nor
inline style, so the bars are ``<rect>`` elements styled by class from the sheet, and
each carries a ``<title>`` (a tooltip, and the value for screen readers).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["bar_chart"]

WIDTH, HEIGHT, BASE = 600, 120, 104  #: viewBox size; bars stand on y = BASE


def bar_chart(values: Sequence[int], *, label: str, unit: str = "sent") -> str:
    """One bar per value, oldest left; the tallest reaches the top. ``label`` names the
    chart for assistive technology (``role="img"`` with ``aria-label``)."""
    top = max(values, default=0)
    step = WIDTH / max(len(values), 1)
    bars = []
    for i, value in enumerate(values):
        height = round((BASE - 4) * value / top, 1) if top else 0
        ago = len(values) - i
        bars.append(
            f'<rect class="bar" x="{i * step + 1:.1f}" y="{BASE - height:.1f}"'
            f' width="{max(step - 2, 1):.1f}" height="{height}">'
            f"<title>{value} {escape(unit)}, {ago} min ago</title></rect>"
        )
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' role="img" aria-label="{escape(label)}">'
        f'<line class="axis" x1="0" y1="{BASE}" x2="{WIDTH}" y2="{BASE}"/>'
        + "".join(bars)
        + f'<text x="0" y="{HEIGHT - 2}">-60 min</text>'
        f'<text x="{WIDTH}" y="{HEIGHT - 2}" text-anchor="end">now</text>'
        f'<text x="{WIDTH}" y="10" text-anchor="end">max {top}/min</text>'
        "</svg>"
    )

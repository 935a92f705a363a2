"""Small inline SVG charts for the audit report: no script, no network, print as they show.

Each chart carries a ``<title>`` and ``role="img"`` with an ``aria-label`` naming
every value, and the report puts the same numbers in a table beside it.
"""

from __future__ import annotations

from html import escape

PALETTE = ("#0969da", "#1a7f37", "#bf8700", "#cf222e", "#8250df", "#57606a", "#1b7c83")
_FONT = 'font-family="system-ui,sans-serif" font-size="12"'


def _fmt(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def bar_chart(bars: list[tuple[str, float]], *, title: str, unit: str = "", digits: int = 0,
              width: int = 620, color: str = PALETTE[0]) -> str:
    """A horizontal bar chart of ``(label, value)`` pairs, as an SVG element string."""
    if not bars:
        return ""
    label_w, value_w, row_h, top = 190, 90, 24, 8
    plot_w = width - label_w - value_w
    top_value = max((v for _, v in bars), default=0) or 1
    height = top + row_h * len(bars) + 8
    described = "; ".join(f"{label}: {_fmt(value, digits)}{unit}" for label, value in bars)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'aria-label="{escape(title)}: {escape(described)}">',
             f"<title>{escape(title)}</title>"]
    for i, (label, value) in enumerate(bars):
        y = top + i * row_h
        bar_w = max(0.0, plot_w * value / top_value)
        shown = label if len(label) <= 28 else label[:27] + "…"
        parts.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end" {_FONT} '
                     f'fill="#1b1f24">{escape(shown)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 4}" width="{bar_w:.1f}" height="{row_h - 8}" '
                     f'rx="2" fill="{color}"/>')
        parts.append(f'<text x="{label_w + bar_w + 6:.1f}" y="{y + 16}" {_FONT} '
                     f'fill="#1b1f24">{escape(_fmt(value, digits))}{escape(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def stacked_bar(parts: list[tuple[str, float, str]], *, title: str, width: int = 620) -> str:
    """One bar split into ``(label, value, color)`` parts, with a legend underneath."""
    total = sum(v for _, v, _ in parts)
    if total <= 0:
        return ""
    bar_h, legend_h = 28, 22
    height = bar_h + 8 + legend_h * len(parts)
    described = "; ".join(f"{label}: {value:g}" for label, value, _ in parts)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'aria-label="{escape(title)}: {escape(described)}">',
           f"<title>{escape(title)}</title>"]
    x = 0.0
    for _, value, color in parts:
        w = width * value / total
        out.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
        x += w
    for i, (label, value, color) in enumerate(parts):
        y = bar_h + 8 + i * legend_h
        out.append(f'<rect x="0" y="{y + 3}" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="18" y="{y + 13}" {_FONT} fill="#1b1f24">{escape(label)}: '
                   f'{value:g} ({100 * value / total:.0f}%)</text>')
    out.append("</svg>")
    return "".join(out)

"""Server-rendered SVG charts: no script, no remote font; text is text, so Chinese renders
wherever the reader's browser has a CJK font (Debian: fonts-noto-cjk)."""

from __future__ import annotations

from html import escape

FONT = "'Noto Sans CJK SC','Source Han Sans SC','WenQuanYi Zen Hei','Microsoft YaHei',sans-serif"


def hbars(items: list[tuple[str, float, str]], width: int = 520, bar_h: int = 22) -> str:
    """Horizontal bars: (label, value, colour)."""
    label_w, pad = 120, 6
    top = max((v for _, v, _ in items), default=0) or 1
    height = len(items) * (bar_h + pad) + pad
    out = [
        f'<svg role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="{FONT}" font-size="13">'
    ]
    for i, (label, value, colour) in enumerate(items):
        y = pad + i * (bar_h + pad)
        w = (width - label_w - 60) * value / top
        out.append(
            f'<text x="{label_w - 6}" y="{y + bar_h * 0.7}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h * 0.7}">{value:g}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def paired_columns(
    groups: list[tuple[str, float | None, float]],
    legend: tuple[str, str],
    width: int = 420,
    height: int = 200,
) -> str:
    """Plan vs actual per group: (label, plan or None, actual)."""
    top = max([max(p or 0, a) for _, p, a in groups] + [1])
    base, left = height - 40, 30
    step = (width - left - 10) / max(1, len(groups))
    out = [
        f'<svg role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="{FONT}" font-size="12">',
        f'<line x1="{left}" y1="{base}" x2="{width - 5}" y2="{base}" stroke="#666"/>',
    ]
    for i, (label, plan, actual) in enumerate(groups):
        x = left + i * step + step * 0.15
        bw = step * 0.3
        for j, (value, colour) in enumerate(((plan or 0, "#bbbbbb"), (actual, "#1f4e79"))):
            h = (base - 20) * value / top
            out.append(
                f'<rect x="{x + j * bw:.1f}" y="{base - h:.1f}" width="{bw:.1f}" height="{h:.1f}" fill="{colour}"/>'
                f'<text x="{x + j * bw + bw / 2:.1f}" y="{base - h - 3:.1f}" text-anchor="middle">'
                f"{'—' if j == 0 and plan is None else f'{value:g}'}</text>"
            )
        out.append(
            f'<text x="{x + bw:.1f}" y="{base + 16}" text-anchor="middle">{escape(label)}</text>'
        )
    out.append(
        f'<rect x="{left}" y="{height - 14}" width="10" height="10" fill="#bbbbbb"/>'
        f'<text x="{left + 14}" y="{height - 5}">{escape(legend[0])}</text>'
        f'<rect x="{left + 90}" y="{height - 14}" width="10" height="10" fill="#1f4e79"/>'
        f'<text x="{left + 104}" y="{height - 5}">{escape(legend[1])}</text>'
    )
    out.append("</svg>")
    return "".join(out)

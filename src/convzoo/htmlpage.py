"""Self-contained HTML pages: inline style, pictures as PNG ``data:`` URIs, no script.

The pieces the report and the comparison pages are built from; every value is escaped here
(``convzoo.escape``: names are text, never markup; links are percent-encoded relative paths).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from .escape import html_text

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1d1d1f; margin: 0; background: #f6f6f4; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 1.6em; margin: 0 0 4px; } h2 { font-size: 1.2em; margin: 32px 0 8px; border-bottom: 1px solid #ddd; }
.sub { color: #666; margin: 0 0 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 110px; }
.card b { display: block; font-size: 1.25em; } .card span { color: #666; font-size: 0.85em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 6px 0; }
th, td { border: 1px solid #ddd; padding: 3px 9px; text-align: right; }
th { background: #f0f0ee; } td.l, th.l { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: 6px 0; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; } .row img { max-width: 640px; }
.bar { background: #4c78a8; height: 11px; display: inline-block; vertical-align: middle; }
code { background: #f0f0ee; padding: 1px 4px; border-radius: 3px; word-break: break-all; }
"""


def esc(value: object) -> str:
    """``value`` as HTML text or a quoted attribute (``convzoo.escape.html_text``)."""
    return html_text(value)


def img(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{esc(alt)}">'


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{esc(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n")


def table(header: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1, *, escape: bool = True) -> str:
    """An HTML table; the first ``left`` columns are left-aligned (names), the rest right-aligned (numbers).

    ``escape=False``: the body's cells are HTML already (the caller escaped what needs it).
    """
    def cells(tag: str, values: Sequence[object], quote: bool) -> str:
        return "".join(f'<{tag}{" class=l" if i < left else ""}>{esc(v) if quote else v}</{tag}>'
                       for i, v in enumerate(values))

    body = "\n".join(f"<tr>{cells('td', row, escape)}</tr>" for row in rows)
    return f"<table>\n<tr>{cells('th', header, True)}</tr>\n{body}\n</table>"


def number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"

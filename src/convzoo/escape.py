"""User-given strings encoded for where they go: a name is data, never markup, math, a link or a command.

A run directory's name, a file name, a class or layer name may hold anything a file system
allows: ``<script>``, ``$x^2$``, ``javascript:``, ``#``, a leading ``_``, escape sequences, bytes
that are not UTF-8 (which Python carries as lone surrogates, ``os.fsdecode``'s
``surrogateescape``). Each destination has one function here, and every place that puts a
user-given string somewhere calls it:

    html_text(s)       HTML element text and attribute values (quotes included)
    href(parts)        a relative link to a path (each segment percent-encoded; never a scheme)
    plot_text(s)       matplotlib text: ``$`` is literal, never math; no control characters
    plot_label(s)      a legend label: ``plot_text``, and a leading ``_`` shown instead of hidden
    terminal(s)        a line for a terminal: control characters and escape sequences shown escaped
    json_text(s)       a str that encodes as UTF-8: bytes that were not UTF-8 shown as ``\\xNN``
    json_safe(obj)     ``json_text`` of every str in a JSON value, keys included

``printable`` is what ``terminal``, ``plot_text`` and ``json_text`` share: every character that is
not valid UTF-8 text or that a terminal or a renderer would act on (C0 and C1 controls, DEL, the
bidirectional overrides) becomes a visible escape (``\\x1b``, ``\\u202e``, ``\\xff`` for an
undecodable byte); everything else, any other Unicode included, is left as it is.
"""

from __future__ import annotations

import html
import os
import unicodedata
from collections.abc import Iterable
from pathlib import PurePath
from urllib.parse import quote

# Format characters that reorder or hide text on a terminal or a page (the "Trojan Source" ones).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as os.fsdecode carries it
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"  # every character _unsafe finds is below U+E000


def _unsafe(ch: str) -> bool:
    category = unicodedata.category(ch)
    # controls (C0, DEL, C1), surrogates, line and paragraph separators, bidi controls
    return category in ("Cc", "Cs", "Zl", "Zp") or ch in _BIDI


def printable(text: object) -> str:
    """``text`` with every control character, surrogate and bidirectional control written as an escape."""
    s = str(text)
    if s.isprintable():  # the bidirectional controls are format characters (Cf): not printable either
        return s  # the common case, fast
    return "".join(_escape_char(ch) if _unsafe(ch) else ch for ch in s)


def terminal(text: object) -> str:
    """``text`` safe to print on a terminal: no escape sequence, no control character, no newline, valid UTF-8."""
    return printable(text)


def json_text(text: object) -> str:
    """``text`` as a str that JSON and UTF-8 can carry: undecodable bytes as ``\\xNN``, controls escaped."""
    return printable(text)


def json_safe(obj: object) -> object:
    """``obj`` (JSON values) with every str, keys included, made ``json_text``: ready for ``json.dumps``."""
    if isinstance(obj, str):
        return json_text(obj)
    if isinstance(obj, dict):
        return {json_text(k) if isinstance(k, str) else k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def html_text(text: object) -> str:
    """``text`` for HTML element content or a quoted attribute value: ``& < > " '`` as entities, controls escaped."""
    return html.escape(printable(text), quote=True)


def href(path: str | PurePath | Iterable[str]) -> str:
    """A relative URL (for ``href=""``, HTML-escaped too) to ``path``, given relative to the page's folder.

    Each segment is percent-encoded as bytes (``os.fsencode``: undecodable bytes survive), so that
    ``#``, ``?``, ``%``, ``:`` and spaces stay part of the name; a first segment that a browser
    would read as a scheme (``javascript:``) cannot occur (``:`` is ``%3A``), and the link starts
    with ``./`` besides. An absolute path becomes ``/a/b``, never a scheme either.
    """
    if isinstance(path, (str, PurePath)):
        pure = PurePath(path)
        absolute = pure.is_absolute()
        parts = list(pure.parts[1:] if absolute else pure.parts)  # less the root
    else:
        absolute, parts = False, list(path)
    encoded = "/".join(quote(os.fsencode(part), safe="") for part in parts)
    if absolute:
        url = "/" + encoded
    else:
        url = "./" + encoded  # quote leaves no ':', so no scheme; "./" also makes "" a link to the folder
    return html.escape(url, quote=True)


def plot_text(text: object) -> str:
    """``text`` for any matplotlib text (title, tick label, annotation): shown exactly, never parsed as math.

    matplotlib reads a string with an even number of unescaped ``$`` as mathtext; each ``$`` is
    written ``\\$``, which matplotlib shows as ``$`` (a backslash before it stays a backslash).
    """
    return printable(text).replace("$", "\\$")


def plot_label(text: object) -> str:
    """``plot_text`` for a legend entry: a label starting with ``_`` (a legend omits it) gets a zero-width space."""
    s = plot_text(text)
    return "\u200b" + s if s.startswith("_") or not s else s


def shown_plot_text(drawn: str) -> str:
    """What matplotlib shows for a string ``plot_text`` or ``plot_label`` produced (for tests and readers)."""
    return drawn.removeprefix("\u200b").replace("\\$", "$")

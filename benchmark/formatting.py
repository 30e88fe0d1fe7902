"""How genbench writes numbers and plugin text into tables: one number format for the terminal,
the CSV-backed pages and the reproduction table, and literal Markdown for text a plugin supplies."""

from __future__ import annotations

import math
import re


def number(value, digits: int = 4) -> str:
    """``digits`` significant digits, in plain notation unless the number is huge or tiny."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if not -4 <= magnitude < 7:
        return f"{value:.{digits}g}"
    decimals = max(0, digits - 1 - magnitude)
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def md_text(text: str, limit: int | None = None) -> str:
    """Plugin text as literal Markdown inside a table cell: no markup, no HTML, one line."""
    text = " ".join(str(text).split())
    if limit and len(text) > limit:
        text = text[: limit - 1] + "…"
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    return re.sub(r"([\\`*_\[\]|~])", r"\\\1", text)

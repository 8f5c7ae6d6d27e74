"""Building (never parsing) the small XML request documents some providers take."""

from __future__ import annotations

from xml.sax.saxutils import escape


def xml_document(root: str, fields: list[tuple[str, str | None]]) -> str:
    """`<ROOT><K>v</K>…</ROOT>` with values escaped; fields whose value is None are left out."""
    inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields if v is not None)
    return f"<{root}>{inner}</{root}>"

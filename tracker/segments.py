"""How a text travels as SMS: its encoding (GSM-7 or UCS-2) and how many segments it takes.

GSM 03.38: a text made only of the default alphabet goes as GSM-7, 160 characters in one SMS
and 153 per segment when concatenated (the user data header takes 7). The extension table's
characters (`^{}\\[~]|€` and form feed) are sent as ESC + char and count double; a multipart
message never splits such a pair. Any other character forces UCS-2: 70 in one SMS, 67 per
segment, counted in UTF-16 code units (an emoji outside the BMP takes two, never split).
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7 = "GSM-7"
UCS2 = "UCS-2"

_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_EXTENDED = "\f^{}\\[~]|€"
_GSM_BASIC = frozenset(_BASIC) - {"\x1b"}  # ESC only introduces an extension character
_GSM_EXTENDED = frozenset(_EXTENDED)

SINGLE = {GSM7: 160, UCS2: 70}
PART = {GSM7: 153, UCS2: 67}


@dataclass(frozen=True)
class Segmentation:
    """A text's encoding, its length in encoding units, and its segment count."""

    encoding: str
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def segment(text: str) -> Segmentation:
    """Encoding and segment count of one message text."""
    if all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in text):
        widths = [2 if c in _GSM_EXTENDED else 1 for c in text]
        return Segmentation(GSM7, sum(widths), _count(widths, GSM7))
    widths = [2 if ord(c) > 0xFFFF else 1 for c in text]
    return Segmentation(UCS2, sum(widths), _count(widths, UCS2))


def _count(widths: list[int], encoding: str) -> int:
    """Segments for characters of these widths: an escape pair or surrogate pair stays whole."""
    total = sum(widths)
    if total <= SINGLE[encoding]:
        return 1 if total else 0
    limit, segments, used = PART[encoding], 1, 0
    for width in widths:
        if used + width > limit:
            segments += 1
            used = 0
        used += width
    return segments

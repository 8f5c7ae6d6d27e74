"""The only place where the project parses XML: size, depth, DTD and entity limits.

Every refusal is an ``XMLRefused`` (a ``ValueError``) with a short ``reason`` code, so a
webhook view can store the raw body, answer 400/413 and never 500 on sender input.
"""

from __future__ import annotations

import functools

# Element/TreeBuilder only build the tree; all parsing goes through DefusedXMLParser.
from xml.etree.ElementTree import Element, TreeBuilder, indent, tostring
from xml.parsers.expat.errors import (
    XML_ERROR_INCORRECT_ENCODING,
    XML_ERROR_UNKNOWN_ENCODING,
    codes,
)

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import DefusedXMLParser, ParseError

MAX_BYTES = 64 * 1024  # DLRs are < 2 KB; anything bigger is a mistake or an attack
MAX_DEPTH = 32  # real postbacks are 2-3 levels; ElementTree helpers recurse on deep trees

_MESSAGE_LIMIT = 200  # messages quote sender data (system ids); keep log lines bounded

# expat reports these as ParseError, but they are about the declared charset, not the markup.
_ENCODING_CODES = {codes[XML_ERROR_INCORRECT_ENCODING], codes[XML_ERROR_UNKNOWN_ENCODING]}


class XMLRefused(ValueError):
    """A document this module will not parse; ``reason`` is a short machine code."""

    reason = "refused"

    def __init__(self, message: str, reason: str | None = None) -> None:
        if reason is not None:
            self.reason = reason
        # One line, bounded: the text may end up in a log or a 400 body.
        flat = " ".join(message.split())
        if len(flat) > _MESSAGE_LIMIT:
            flat = flat[: _MESSAGE_LIMIT - 3] + "..."
        super().__init__(flat)


class XMLTooLarge(XMLRefused):
    """The body is longer than the byte limit; nothing was parsed."""

    reason = "too_large"


class XMLTooDeep(XMLRefused):
    """Elements are nested deeper than the depth limit."""

    reason = "too_deep"


class XMLForbidden(XMLRefused):
    """The document uses a DTD, an entity declaration or an external reference."""

    reason = "dtd_forbidden"


class XMLMalformed(XMLRefused):
    """Not well-formed XML, or a declared encoding that cannot be decoded."""

    reason = "malformed"


class _DepthLimitedBuilder:
    """TreeBuilder target that refuses elements nested deeper than ``max_depth``."""

    def __init__(self, max_depth: int) -> None:
        self._builder = TreeBuilder()
        self._depth = 0
        self._max_depth = max_depth

    def start(self, tag: str, attrib: dict[str, str]) -> Element:
        self._depth += 1
        if self._depth > self._max_depth:
            # Raised inside the expat callback: parsing stops here, the tree is never built.
            raise XMLTooDeep(f"elements nested deeper than {self._max_depth} levels")
        return self._builder.start(tag, attrib)

    def end(self, tag: str) -> Element:
        self._depth -= 1
        return self._builder.end(tag)

    def data(self, data: str) -> None:
        self._builder.data(data)

    def close(self) -> Element:
        return self._builder.close()


def _refusal(exc: Exception) -> XMLRefused:
    """Translate a parser or codec exception into the matching typed refusal."""
    if isinstance(exc, DTDForbidden):
        return XMLForbidden(
            f"DOCTYPE not allowed (system_id={exc.sysid!r}, public_id={exc.pubid!r})"
        )
    if isinstance(exc, EntitiesForbidden):
        return XMLForbidden(f"entity declaration not allowed ({exc.name!r})", "entities_forbidden")
    if isinstance(exc, ExternalReferenceForbidden):
        return XMLForbidden(
            f"external reference not allowed (system_id={exc.sysid!r})",
            "external_reference_forbidden",
        )
    if isinstance(exc, ParseError):
        reason = "encoding" if exc.code in _ENCODING_CODES else "malformed"
        return XMLMalformed(str(exc), reason)
    # pyexpat's codec bridge: ValueError for multi-byte charsets (UTF-7, GB18030, UTF-32),
    # LookupError for charset names Python does not know.
    return XMLMalformed(f"unsupported encoding: {exc}", "encoding")


def parse(data: bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Element:
    """Parse an untrusted XML body and return its root element, or raise ``XMLRefused``."""
    # Bytes only: a str was already decoded by someone guessing, and the declaration is lost.
    if not isinstance(data, bytes | bytearray):
        raise TypeError(f"parse() needs the raw body as bytes, not {type(data).__name__}")
    if len(data) > max_bytes:
        raise XMLTooLarge(f"body is {len(data)} bytes, limit is {max_bytes}")
    parser = DefusedXMLParser(target=_DepthLimitedBuilder(max_depth), forbid_dtd=True)
    try:
        # One feed() call: expat < 2.6 re-scans a large token for every chunk fed.
        parser.feed(bytes(data))
        return parser.close()
    except XMLRefused:
        raise
    except (ParseError, ValueError, LookupError) as exc:  # DefusedXmlException is a ValueError
        raise _refusal(exc) from exc


def pretty(data: bytes) -> str | None:
    """An untrusted XML body indented for reading (dashboards), or None when it is refused or
    namespaced (re-serializing would rename the prefixes: show those as they came)."""
    try:
        root = parse(data)
    except XMLRefused:
        return None
    if any(el.tag.startswith("{") for el in root.iter()):
        return None
    indent(root)
    return tostring(root, encoding="unicode")


@functools.lru_cache(maxsize=1024)
def _local_name(name: str) -> str:
    """Return ``name`` without its ``{namespace}`` prefix, lower-cased (cached: tags repeat)."""
    return name.rpartition("}")[2].lower()


def find_child(el: Element, *names: str) -> Element | None:
    """Return the first direct child whose tag matches any of ``names``, else None.

    Matching ignores case and namespaces (``{urn:x}TrackingId`` matches ``TRACKINGID``).
    """
    wanted = {_local_name(name) for name in names}
    return next((child for child in el if _local_name(child.tag) in wanted), None)


def find_text(el: Element, *names: str) -> str | None:
    """Return the stripped text of ``find_child(el, *names)``, or None if absent or blank."""
    child = find_child(el, *names)
    if child is None or child.text is None:
        return None
    return child.text.strip() or None


def attr(el: Element, name: str) -> str | None:
    """Return the stripped value of attribute ``name`` (any case or namespace), None if blank."""
    wanted = _local_name(name)
    for key, value in el.attrib.items():
        if _local_name(key) == wanted:
            return value.strip() or None
    return None

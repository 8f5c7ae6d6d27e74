"""tracker.safexml against the attack corpus in tests/xml_attacks/ and generated bodies."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from defusedxml import EntitiesForbidden, ExternalReferenceForbidden
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker import safexml
from tracker.safexml import (
    MAX_BYTES,
    MAX_DEPTH,
    XMLForbidden,
    XMLMalformed,
    XMLRefused,
    XMLTooDeep,
    XMLTooLarge,
    attr,
    find_child,
    find_text,
    parse,
)

CORPUS = Path(__file__).parent / "xml_attacks"
TIME_LIMIT = 0.5  # seconds; a guard against expansion or quadratic work, not a benchmark

REFUSED_FILES: dict[str, tuple[type[XMLRefused], str]] = {
    # Entity expansion, XXE, DTDs: all stop at the DOCTYPE because forbid_dtd=True.
    "billion_laughs.xml": (XMLForbidden, "dtd_forbidden"),
    "quadratic_blowup_small.xml": (XMLForbidden, "dtd_forbidden"),
    "cyclic_entity.xml": (XMLForbidden, "dtd_forbidden"),
    "xxe_local_file.xml": (XMLForbidden, "dtd_forbidden"),
    "xxe_local_file_relative.xml": (XMLForbidden, "dtd_forbidden"),
    "xxe_network.xml": (XMLForbidden, "dtd_forbidden"),
    "xxe_parameter_entity.xml": (XMLForbidden, "dtd_forbidden"),
    "xxe_blind_oob.xml": (XMLForbidden, "dtd_forbidden"),
    "dtd_external_system.xml": (XMLForbidden, "dtd_forbidden"),
    "dtd_external_public.xml": (XMLForbidden, "dtd_forbidden"),
    "dtd_internal_only.xml": (XMLForbidden, "dtd_forbidden"),
    "internal_entity.xml": (XMLForbidden, "dtd_forbidden"),
    "unparsed_entity_ndata.xml": (XMLForbidden, "dtd_forbidden"),
    "html_doctype_error_page.html": (XMLForbidden, "dtd_forbidden"),  # <!DOCTYPE html> is a DTD
    # Invalid UTF-8 is an "invalid token" to expat, so these two read as malformed.
    "enc_undeclared_latin1.xml": (XMLMalformed, "malformed"),
    "enc_declared_utf8_is_latin1.xml": (XMLMalformed, "malformed"),
    "enc_declared_utf16_is_utf8.xml": (XMLMalformed, "encoding"),
    "enc_utf7_declared.xml": (XMLMalformed, "encoding"),
    "enc_gb18030_declared.xml": (XMLMalformed, "encoding"),
    "enc_unknown_declared.xml": (XMLMalformed, "encoding"),
    "malformed_truncated.xml": (XMLMalformed, "malformed"),
    "malformed_two_roots.xml": (XMLMalformed, "malformed"),
    "malformed_junk_after_root.xml": (XMLMalformed, "malformed"),
    "malformed_empty.xml": (XMLMalformed, "malformed"),
    "malformed_whitespace_only.xml": (XMLMalformed, "malformed"),
    "malformed_html_error_page.html": (XMLMalformed, "malformed"),
    "malformed_json_body.json": (XMLMalformed, "malformed"),
    "malformed_nul_byte.xml": (XMLMalformed, "malformed"),
}

DELIVERED = {"code": "N202", "status": "Message Sent/Delivered", "to": "16505550123"}
ACCEPTED_FILES: dict[str, dict[str, str]] = {
    "ok_postback_utf8_bom.xml": {**DELIVERED, "from_mask": "Café Ñandú"},
    "ok_postback_utf16_bom.xml": {**DELIVERED, "from_mask": "Café Ñandú"},
    "ok_postback_latin1.xml": {**DELIVERED, "from_mask": "Café Ñandú"},
    "ok_postback_namespaced.xml": {"code": "N201", "trackingid": "U01TXzkwMDAy"},
    "ok_postback_default_namespace.xml": {"CODE": "E202", "TrackingID": "U01TXzkwMDAz"},
    "ok_notification_legacy.xml": {"Code": "N201", "origin": "SMS_MT"},
    "ok_xinclude_inert.xml": {"code": "N201"},
    "ok_stylesheet_pi_inert.xml": {"code": "N201"},
}


class Listener:
    """Loopback TCP socket that never answers; counts connection attempts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def connections(self, wait: float = 0.0) -> int:
        """Accept and count every completed handshake queued so far."""
        count = 0
        # The kernel completes handshakes into the backlog, so nothing is missed between calls.
        while select.select([self.sock], [], [], wait)[0]:
            conn, _ = self.sock.accept()
            conn.close()
            count += 1
        return count


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A fresh loopback listener per test."""
    lst = Listener()
    yield lst
    lst.sock.close()


def corpus(name: str, port: int) -> bytes:
    """Read a corpus file with the listener's port filled in."""
    return (CORPUS / name).read_bytes().replace(b"__PORT__", str(port).encode())


def assert_refused(data: bytes, cls: type[XMLRefused], reason: str, **limits: int) -> XMLRefused:
    """Parse ``data`` and check it is refused quickly with exactly ``cls`` and ``reason``."""
    started = time.perf_counter()
    with pytest.raises(XMLRefused) as info:
        parse(data, **limits)
    elapsed = time.perf_counter() - started
    assert type(info.value) is cls
    assert info.value.reason == reason
    message = str(info.value)
    assert message
    assert "\n" not in message
    assert elapsed < TIME_LIMIT
    return info.value


def nest(levels: int) -> bytes:
    """Return ``levels`` nested elements."""
    return b"<a>" * levels + b"</a>" * levels


def padded(size: int) -> bytes:
    """Return a well-formed document of exactly ``size`` bytes."""
    return b"<a>" + b"x" * (size - 7) + b"</a>"


def quadratic(entity_chars: int, references: int) -> bytes:
    """Return a quadratic-blowup document: one big entity referenced many times."""
    head = b'<!DOCTYPE r [<!ENTITY a "' + b"A" * entity_chars + b'">]>'
    return head + b"<r>" + b"&a;" * references + b"</r>"


def test_table_covers_the_corpus() -> None:
    files = {p.name for p in CORPUS.iterdir() if p.name != "README.md"}
    assert files == set(REFUSED_FILES) | set(ACCEPTED_FILES)


@pytest.mark.parametrize(("name", "expected"), REFUSED_FILES.items(), ids=list(REFUSED_FILES))
def test_corpus_refused(
    name: str, expected: tuple[type[XMLRefused], str], listener: Listener
) -> None:
    assert_refused(corpus(name, listener.port), *expected)
    assert listener.connections() == 0


def test_no_corpus_file_reaches_the_network(listener: Listener) -> None:
    for name in sorted(REFUSED_FILES.keys() | ACCEPTED_FILES.keys()):
        with contextlib.suppress(XMLRefused):
            parse(corpus(name, listener.port))
    # A generous wait: a fetch would be synchronous, but give a stray thread a chance to show.
    assert listener.connections(wait=0.2) == 0


@pytest.mark.parametrize(("name", "fields"), ACCEPTED_FILES.items(), ids=list(ACCEPTED_FILES))
def test_corpus_accepted(name: str, fields: dict[str, str], listener: Listener) -> None:
    started = time.perf_counter()
    root = parse(corpus(name, listener.port))
    assert time.perf_counter() - started < TIME_LIMIT
    for field, value in fields.items():
        assert find_text(root, field) == value
    assert listener.connections() == 0


def test_namespaced_root_keeps_xsi_attributes(listener: Listener) -> None:
    root = parse(corpus("ok_postback_namespaced.xml", listener.port))
    assert root.tag == "POSTBACK"
    location = attr(root, "NONAMESPACESCHEMALOCATION")
    assert location == f"http://127.0.0.1:{listener.port}/schema/postback.xsd"


def test_default_namespace_tags_are_qualified_but_found() -> None:
    root = parse(corpus("ok_postback_default_namespace.xml", 0))
    assert root.tag == "{urn:example:skycore}Postback"
    assert find_child(root, "trackingid") is root[1]


def test_legacy_notification_attributes_any_case() -> None:
    root = parse(corpus("ok_notification_legacy.xml", 0))
    assert attr(root, "ID") == "327"
    assert attr(root, "Created") == "2011-07-26 10:22:27.146582-04"  # leading space stripped
    body = find_child(root, "body")
    assert body is not None
    assert find_text(body, "TRACKINGID") == "SMS_12346"
    status = find_child(body, "status")
    assert status is not None
    assert attr(status, "protocol") == "4"
    assert attr(status, "Status") == "0"


GENERATED = [
    pytest.param(quadratic(30_000, 17_000), {}, XMLTooLarge, "too_large", id="quadratic_80kb"),
    pytest.param(
        quadratic(30_000, 17_000),
        {"max_bytes": 1 << 20},
        XMLForbidden,
        "dtd_forbidden",
        id="quadratic_80kb_size_limit_raised",
    ),
    pytest.param(nest(5_000), {}, XMLTooDeep, "too_deep", id="nesting_5000"),
    pytest.param(nest(100_000), {}, XMLTooLarge, "too_large", id="nesting_100000"),
    pytest.param(
        nest(100_000),
        {"max_bytes": 1 << 20},
        XMLTooDeep,
        "too_deep",
        id="nesting_100000_size_limit_raised",
    ),
    pytest.param(nest(MAX_DEPTH + 1), {}, XMLTooDeep, "too_deep", id="depth_limit_plus_one"),
    pytest.param(nest(4), {"max_depth": 3}, XMLTooDeep, "too_deep", id="custom_depth_limit"),
    pytest.param(padded(MAX_BYTES + 1), {}, XMLTooLarge, "too_large", id="size_limit_plus_one"),
    pytest.param(padded(101), {"max_bytes": 100}, XMLTooLarge, "too_large", id="custom_size"),
    # A huge system id must not turn into a huge or multi-line log message.
    pytest.param(
        b'<!DOCTYPE r SYSTEM "' + b"http://x/\n" * 1000 + b'"><r/>',
        {},
        XMLForbidden,
        "dtd_forbidden",
        id="long_multiline_system_id",
    ),
]


@pytest.mark.parametrize(("data", "limits", "cls", "reason"), GENERATED)
def test_generated_refused(
    data: bytes, limits: dict[str, int], cls: type[XMLRefused], reason: str
) -> None:
    error = assert_refused(data, cls, reason, **limits)
    assert len(str(error)) <= 200


def test_limits_are_inclusive() -> None:
    assert len(padded(MAX_BYTES)) == MAX_BYTES
    assert parse(padded(MAX_BYTES)).text == "x" * (MAX_BYTES - 7)
    root = parse(nest(MAX_DEPTH))
    assert len(list(root.iter())) == MAX_DEPTH
    assert parse(nest(3), max_depth=3).tag == "a"


def test_depth_counts_nesting_not_elements() -> None:
    # 200 siblings, each a full-depth chain: the counter must come back down after each one.
    chain = nest(MAX_DEPTH - 1)
    root = parse(b"<r>" + chain * 200 + b"</r>")
    assert len(root) == 200


def test_str_is_refused_bytearray_is_accepted() -> None:
    with pytest.raises(TypeError):
        parse("<a/>")  # type: ignore[arg-type]
    assert parse(bytearray(b"<a>1</a>")).text == "1"


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (EntitiesForbidden("e", "v", None, None, None, None), "entities_forbidden"),
        (
            ExternalReferenceForbidden("ctx", None, "http://x/", None),
            "external_reference_forbidden",
        ),
    ],
)
def test_refusal_reasons_behind_the_dtd_ban(exc: Exception, reason: str) -> None:
    # Unreachable while forbid_dtd=True (entities need a DOCTYPE); kept correct in case it changes.
    refusal = safexml._refusal(exc)
    assert type(refusal) is XMLForbidden
    assert refusal.reason == reason


def test_find_text_and_attr_edge_cases() -> None:
    root = parse(b'<r A=" 1 " b="  "><x>  </x><y/><x>second</x><Y>third</Y></r>')
    assert find_text(root, "x") is None  # blank counts as missing; first match wins
    assert find_text(root, "missing", "y") is None  # <y/> has no text
    assert find_text(root, "nope") is None
    assert attr(root, "a") == "1"
    assert attr(root, "B") is None
    assert attr(root, "c") is None


VALID = corpus("ok_postback_namespaced.xml", 8080)


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=len(VALID)))
def test_nothing_but_xmlrefused_escapes(noise: bytes, at: int) -> None:
    # Random bytes spliced into a valid document: any outcome but an Element or XMLRefused fails.
    for data in (noise, VALID[:at] + noise + VALID[at:]):
        with contextlib.suppress(XMLRefused):
            assert isinstance(parse(data).tag, str)

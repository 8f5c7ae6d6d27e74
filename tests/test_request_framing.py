"""Where the web worker's event loop decides a request is whole (tracker.web.worker): only a
whole request reaches a thread and the app; a cut-off one never does."""

from __future__ import annotations

import pytest

from tracker.web.worker import MAX_HEADER_BYTES, Refused, request_end

HEAD = b"POST /callbacks/skycore/t HTTP/1.1\r\nHost: x\r\n"
LIMIT = 1024


def test_a_request_without_a_body_ends_with_its_headers() -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert request_end(request, LIMIT) == len(request)
    assert request_end(request + b"GET /next", LIMIT) == len(request)  # pipelined: the first


def test_headers_not_yet_ended_are_incomplete() -> None:
    assert request_end(HEAD, LIMIT) is None
    assert request_end(HEAD + b"Content-Length: 5\r\n", LIMIT) is None


def test_a_body_shorter_than_its_content_length_is_incomplete() -> None:
    head = HEAD + b"Content-Length: 10\r\n\r\n"
    assert request_end(head + b"<POSTBACK>"[:9], LIMIT) is None
    assert request_end(head + b"<POSTBACK>", LIMIT) == len(head) + 10
    assert request_end(head + b"<POSTBACK>GET", LIMIT) == len(head) + 10


def test_a_chunked_body_ends_with_its_last_chunk_and_trailers() -> None:
    head = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    body = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\n"
    for cut in range(len(body)):
        assert request_end(head + body[:cut], LIMIT) is None, cut
    assert request_end(head + body, LIMIT) == len(head + body)
    with_trailer = b"5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n"
    assert request_end(head + with_trailer[:-2], LIMIT) is None
    assert request_end(head + with_trailer, LIMIT) == len(head + with_trailer)


@pytest.mark.parametrize("size", [b"zz", b"-5", b"+5", b"0x5", b"1_0", b"12345678901234567"])
def test_a_chunk_size_that_is_not_one_goes_to_the_parser_at_once(size: bytes) -> None:
    head = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    end = request_end(head + size + b"\r\nhello\r\n", LIMIT)
    assert end == len(head) + len(size) + 2  # gunicorn's parser answers 400; nobody waits


def test_a_malformed_content_length_goes_to_the_parser_at_once() -> None:
    head = HEAD + b"Content-Length: 5x\r\n\r\n"
    assert request_end(head, LIMIT) == len(head)


def test_bodies_over_the_limit_are_refused_before_they_are_read() -> None:
    with pytest.raises(Refused) as refused:
        request_end(HEAD + b"Content-Length: 1025\r\n\r\n", LIMIT)
    assert refused.value.status.startswith("413")
    chunked = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"a" * 1024 + b"\r\n"
    assert request_end(chunked, LIMIT) is None  # exactly the limit so far
    with pytest.raises(Refused):
        request_end(chunked + b"1\r\nb\r\n", LIMIT)


def test_endless_headers_are_refused() -> None:
    with pytest.raises(Refused) as refused:
        request_end(HEAD + b"X: " + b"a" * MAX_HEADER_BYTES, LIMIT)
    assert refused.value.status.startswith("431")

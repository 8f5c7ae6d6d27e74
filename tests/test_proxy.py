"""Behind a proxy (trusted_proxies = 1) and allowed_hosts, over real HTTP on both databases.

The test client plays nginx: it sets X-Forwarded-For/-Proto/-Host as the proxy would, with a
client's own forged entries in front where a hostile client would put them.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opsserver import callbacks, create_user, login, post_fake_callback, serve_on
from servers import TrackerServer

from tracker.web.security import host_allowed


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackerServer]:
    with serve_on(request, tmp_path_factory, "proxy", trusted_proxies=1,
                  allowed_hosts=["127.0.0.1", "sms.example.com", ".example.org"]) as served:
        create_user(served, "ana")
        yield served


def via_proxy(client: str, proto: str = "http", host: str = "sms.example.com",
              forged: str = "") -> dict[str, str]:
    """The headers nginx sends for `client` (after whatever the client itself forged)."""
    return {"X-Forwarded-For": f"{forged}, {client}" if forged else client,
            "X-Forwarded-Proto": proto, "X-Forwarded-Host": host}


def test_a_callback_records_the_client_the_proxy_saw(server: TrackerServer) -> None:
    before = len(callbacks(server))
    answer = post_fake_callback(server.base_url, headers=via_proxy("203.0.113.9",
                                                                   forged="198.51.100.1"))
    assert answer.status_code == 200, answer.text
    [(_id, provider, remote_addr, _verdict)] = callbacks(server)[before:]
    # Only the last hop is the proxy's word; the client's own entry in front is ignored.
    assert (provider, remote_addr) == ("fake", "203.0.113.9")


def test_login_throttling_counts_each_client_behind_the_proxy(server: TrackerServer) -> None:
    guesser, colleague = via_proxy("203.0.113.20"), via_proxy("203.0.113.21")
    with httpx.Client(timeout=10) as client:
        answers = [login(client, server.base_url, "ana", "wrong password", **guesser)
                   for _ in range(6)]
        assert [a.status_code for a in answers] == [401] * 5 + [429]
        assert int(answers[-1].headers["Retry-After"]) > 0
        # A forged X-Forwarded-For in front of the proxy's entry does not get the guesser out.
        forged = via_proxy("203.0.113.20", forged="192.0.2.77")
        assert login(client, server.base_url, "ana", "wrong password",
                     **forged).status_code == 429
    with httpx.Client(timeout=10) as client:
        # The same account from another client behind the same proxy is not blocked.
        assert login(client, server.base_url, "ana", **colleague).status_code == 302


def test_https_at_the_proxy_is_https_to_the_app(server: TrackerServer) -> None:
    """X-Forwarded-Proto is believed: over https the CSRF check requires a same-origin
    Referer (as browsers send), which over plain http it does not."""
    public = "https://sms.example.com"
    with httpx.Client(timeout=10) as client:
        form = client.get(f"{server.base_url}/auth/login", headers=via_proxy("203.0.113.30",
                                                                            "https"))
        token = form.text.split('name="csrf_token" value="')[1].split('"')[0]
        data = {"username": "ana", "password": "x" * 12, "csrf_token": token}
        refused = client.post(f"{server.base_url}/auth/login", data=data,
                              headers=via_proxy("203.0.113.30", "https"))
        assert refused.status_code == 400 and "referrer" in refused.text.lower()
        cross = client.post(f"{server.base_url}/auth/login", data=data, headers={
            **via_proxy("203.0.113.30", "https"), "Referer": "https://evil.example.net/"})
        assert cross.status_code == 400
        same = client.post(f"{server.base_url}/auth/login", data=data, headers={
            **via_proxy("203.0.113.30", "https"), "Referer": f"{public}/auth/login"})
        assert same.status_code == 401  # the form was accepted; the password was wrong


@pytest.mark.parametrize(("host", "forwarded", "allowed"), [
    ("127.0.0.1", None, True),
    ("sms.example.com", "sms.example.com", True),
    ("x", "example.org", True),  # ".example.org": the domain itself
    ("x", "a.b.example.org", True),  # and every name under it
    ("x", "SMS.Example.COM:8443", True),  # case and port do not matter
    ("x", "evil.example.net", False),
    ("x", "sms.example.com.evil.net", False),
    ("x", "notexample.org", False),
    ("evil.example.net", None, False),
])
def test_only_allowed_hosts_are_answered(server: TrackerServer, host: str,
                                         forwarded: str | None, allowed: bool) -> None:
    headers = {"Host": host if forwarded is None else f"127.0.0.1:{server.port}"}
    if forwarded is not None:
        headers.update(via_proxy("203.0.113.40", host=forwarded))
    before = len(callbacks(server))
    for path in ("/auth/login", "/api/v1/messages/1"):
        answer = httpx.get(server.base_url + path, headers=headers, timeout=10)
        assert (answer.status_code != 400) == allowed, (path, answer.status_code, answer.text)
    callback = post_fake_callback(server.base_url, headers=headers)
    assert (callback.status_code == 200) == allowed, callback.text
    if not allowed:
        assert callback.status_code == 400 and "Host" in callback.text
        assert len(callbacks(server)) == before  # refused before anything was stored


def test_host_patterns_without_a_server() -> None:
    """The matching rule on its own, for the forms a Host header takes."""
    allowed = ["sms.example.com", ".example.org", "[::1]"]
    assert host_allowed("sms.example.com:443", allowed)
    assert host_allowed("sms.example.com.", allowed)
    assert host_allowed("[::1]:8000", allowed)
    assert not host_allowed("[::2]:8000", allowed)
    assert not host_allowed("", allowed)
    assert not host_allowed("example.com", allowed)


def test_wrong_api_keys_are_counted_per_client_behind_the_proxy(server: TrackerServer) -> None:
    from tracker.web.api import KEY_FAILURES_ALLOWED

    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        def wrong_key(address: str) -> int:
            return client.get("/api/v1/messages/1", headers={
                "Authorization": "Bearer dlr_wrong", **via_proxy(address)}).status_code

        assert [wrong_key("203.0.113.50") for _ in range(KEY_FAILURES_ALLOWED + 1)] == [
            401] * KEY_FAILURES_ALLOWED + [429]
        assert wrong_key("203.0.113.51") == 401  # its neighbour behind the proxy is not blocked
        assert wrong_key("203.0.113.50") == 429


@pytest.fixture(scope="module", params=["sqlite"])
def direct(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackerServer]:
    """`tracker serve` with no proxy in front (trusted_proxies = 0, the default)."""
    with serve_on(request, tmp_path_factory, "direct") as served:
        create_user(served, "ana")
        yield served


def test_without_a_trusted_proxy_forwarded_headers_are_not_believed(direct: TrackerServer
                                                                    ) -> None:
    """A client talking to the app directly (here over loopback, where gunicorn by default
    believes X-Forwarded-Proto) cannot claim https: the login form is taken as plain http,
    with no Referer check, and its callbacks are recorded under its own address."""
    forged = via_proxy("203.0.113.40", "https")
    with httpx.Client(timeout=10) as client:
        form = client.get(f"{direct.base_url}/auth/login", headers=forged)
        token = form.text.split('name="csrf_token" value="')[1].split('"')[0]
        answer = client.post(f"{direct.base_url}/auth/login", headers=forged, data={
            "username": "ana", "password": "x" * 12, "csrf_token": token})
        assert answer.status_code == 401, answer.text[:300]  # wrong password, not 400 referrer
    before = len(callbacks(direct))
    assert post_fake_callback(direct.base_url, headers=forged).status_code == 200
    [(_id, _provider, remote_addr, _verdict)] = callbacks(direct)[before:]
    assert remote_addr == "127.0.0.1"

"""Callback access rules per provider over real HTTP, both databases: an address allowlist seen
through trusted_proxies, and Basic credentials from the callback URL. Refused callbacks are
answered 403 (401 with a challenge when no credentials came), counted, never stored."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from conftest import make_config
from opsserver import FAKE_TOKEN, callbacks, post_fake_callback, serve_on
from servers import SKYCORE_TOKEN, TrackerServer, skycore_settings, tracker_command
from standins.skycore import postback

from tracker import create_app
from tracker.errors import ConfigError

PASSWORD = "pw-Zx81_3kq/Lm 9"  # characters a URL must percent-encode
METRICS_TOKEN = "metrics-token-for-tests"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackerServer]:
    with serve_on(request, tmp_path_factory, "access", trusted_proxies=1,
                  metrics_token=METRICS_TOKEN, providers={
                      "fake": {"callback_token": FAKE_TOKEN,
                               "callback_allow_from": ["203.0.113.0/24", "2001:db8::/32"]},
                      # sends go nowhere here: only its callbacks are posted
                      "skycore": skycore_settings("http://127.0.0.1:9/", callback_username="dlr",
                                                  callback_password=PASSWORD)}) as served:
        yield served


def from_address(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address, "X-Forwarded-Proto": "https"}


def refused_count(server: TrackerServer, provider: str) -> float:
    """tracker_callbacks_total{provider, verdict="forbidden"} from /metrics."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=10,
                     headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    match = re.search(rf'^tracker_callbacks_total{{provider="{provider}",'
                      rf'verdict="forbidden"}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize(("address", "allowed"), [
    ("203.0.113.7", True),
    ("203.0.113.255", True),
    ("2001:db8::5", True),
    ("203.0.114.1", False),
    ("198.51.100.7", False),
    ("2001:db9::5", False),
    ("not-an-address", False),
])
def test_only_the_providers_networks_may_post(server: TrackerServer, address: str,
                                              allowed: bool) -> None:
    before, counted = len(callbacks(server)), refused_count(server, "fake")
    answer = post_fake_callback(server.base_url, headers=from_address(address))
    stored = callbacks(server)[before:]
    if allowed:
        assert answer.status_code == 200, answer.text
        assert [row[2] for row in stored] == [address]
    else:
        assert answer.status_code == 403 and answer.text == "forbidden\n"
        assert stored == []
        assert refused_count(server, "fake") == counted + 1


def test_the_proxys_own_address_is_not_the_providers(server: TrackerServer) -> None:
    """Without X-Forwarded-For the caller is the proxy (loopback here): refused."""
    before = len(callbacks(server))
    assert post_fake_callback(server.base_url).status_code == 403
    assert len(callbacks(server)) == before


def test_a_wrong_token_is_still_404_whatever_the_address(server: TrackerServer) -> None:
    """The rules come after the token: nobody learns from a 403 which providers exist."""
    answer = post_fake_callback(server.base_url, token="wrong",
                                headers=from_address("198.51.100.7"))
    assert answer.status_code == 404


def skycore_url(server: TrackerServer, userinfo: str = "") -> str:
    return f"http://{userinfo}127.0.0.1:{server.port}/callbacks/skycore/{SKYCORE_TOKEN}"


@pytest.mark.parametrize(("userinfo", "status"), [
    ("", 401),  # no credentials: Basic's challenge, for clients that wait for one
    ("dlr:wrong-password-of-length@", 403),
    ("dlr:pw-Zx81_3kq@", 403),  # a prefix of the right one
    ("admin:pw-Zx81_3kq%2FLm%209@", 403),  # the right password, the wrong user
    ("dlr:pw-Zx81_3kq%2FLm%209@", 200),
])
def test_basic_credentials_from_the_callback_url(server: TrackerServer, userinfo: str,
                                                 status: int) -> None:
    before, counted = len(callbacks(server)), refused_count(server, "skycore")
    # httpx, like curl and most HTTP clients, sends a URL's user:password as Basic.
    answer = httpx.post(skycore_url(server, userinfo), content=postback("T-access-1"),
                        headers={"Content-Type": "text/xml"}, timeout=10)
    assert answer.status_code == status, answer.text
    stored = callbacks(server)[before:]
    if status == 200:
        assert [row[1] for row in stored] == ["skycore"]
        return
    assert stored == []
    assert refused_count(server, "skycore") == counted + 1
    if status == 401:
        assert answer.headers["WWW-Authenticate"].startswith('Basic realm="')


def test_a_challenged_client_gets_in(server: TrackerServer) -> None:
    """A client that sends credentials only once challenged gets in on its second request."""
    with httpx.Client(timeout=10) as client:
        first = client.post(skycore_url(server), content=postback("T-access-2"))
        assert first.status_code == 401
        second = client.post(skycore_url(server), content=postback("T-access-2"),
                             auth=httpx.BasicAuth("dlr", PASSWORD))
        assert second.status_code == 200, second.text


def test_the_url_to_give_the_provider_carries_the_credentials(server: TrackerServer) -> None:
    done = subprocess.run([*tracker_command(), "providers", "setup", "skycore"],
                          env=server.env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert f"http://dlr:pw-Zx81_3kq%2FLm%209@127.0.0.1:{server.port}/callbacks/skycore/" \
           f"{SKYCORE_TOKEN}" in done.stderr + done.stdout


@pytest.mark.parametrize(("fake", "wrong"), [
    ({"callback_allow_from": ["203.0.113.0/33"]}, "providers.fake.callback_allow_from"),
    ({"callback_allow_from": ["example.com"]}, "providers.fake.callback_allow_from"),
    ({"callback_username": "dlr"}, "callback_password go together"),
    ({"callback_password": "x" * 20}, "callback_password go together"),
    ({"callback_username": "a:b", "callback_password": "x" * 20},
     "providers.fake.callback_username"),
    ({"callback_username": "dlr", "callback_password": "short"},
     "providers.fake.callback_password"),
])
def test_wrong_rules_fail_at_start_naming_the_key(tmp_path, fake, wrong) -> None:
    config = make_config(f"sqlite:///{tmp_path / 't.sqlite3'}")
    config["providers"]["fake"].update(fake)
    with pytest.raises(ConfigError, match=re.escape(wrong)):
        create_app(config)


def test_the_environment_gives_networks_comma_separated(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRACKER_PROVIDERS__FAKE__CALLBACK_ALLOW_FROM",
                       "203.0.113.0/24, 2001:db8::/32")
    app = create_app(make_config(f"sqlite:///{tmp_path / 't.sqlite3'}"))
    access = app.extensions["providers"]["fake"].access
    assert access.address_allowed("203.0.113.9") and access.address_allowed("2001:db8::1")
    assert access.address_allowed("::ffff:203.0.113.9")  # from a dual-stack socket
    assert not access.address_allowed("192.0.2.1")

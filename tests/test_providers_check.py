"""`tracker providers check [SLUG]`: per provider, whether the host, the key and the sender are
accepted, through the provider's cheapest authenticated call, run as a user runs it against
stand-ins speaking the real wire formats. Nothing is sent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from standins.mobizon import MobizonStandIn

KEY = "kz0123456789abcdef0123456789abcdef01234567"


def check(tmp_path: Path, *args: str, **providers: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env["TRACKER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'check.sqlite3'}"
    env["TRACKER_SECRET_KEY"] = "check-test-secret"
    env["TRACKER_PROVIDERS__FAKE__CALLBACK_TOKEN"] = "fake-token"
    for slug, settings in providers.items():
        for key, value in settings.items():
            env[f"TRACKER_PROVIDERS__{slug.upper()}__{key.upper()}"] = value
    return subprocess.run([sys.executable, "-m", "tracker.cli", "providers", "check", *args],
                          env=env, text=True, capture_output=True, timeout=60, check=False)


def lines(result: subprocess.CompletedProcess) -> dict[tuple[str, str], str]:
    out = {}
    for line in result.stdout.splitlines():
        slug, subject, mark, *_ = line.split()
        out[(slug, subject)] = mark
    return out


def test_a_good_key_and_host_pass_and_nothing_is_sent(tmp_path: Path) -> None:
    with MobizonStandIn(api_key=KEY) as mob:
        result = check(tmp_path, mobizon={"api_key": KEY, "base_url": mob.url})
        sent = [r for r in mob.requests if r.method == "sendsmsmessage"]
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result)
    assert found[("mobizon", "host")] == "ok"
    assert found[("mobizon", "key")] == "ok"
    assert found[("mobizon", "sender")] == "-"  # not checkable without sending: said so
    assert found[("fake", "host")] == "ok"
    assert sent == []
    assert KEY not in result.stdout + result.stderr


def test_a_refused_key_is_named_and_exits_1(tmp_path: Path) -> None:
    with MobizonStandIn(api_key=KEY) as mob:
        result = check(tmp_path, "mobizon", mobizon={"api_key": "wrong" + KEY[5:],
                                                     "base_url": mob.url})
    assert result.returncode == 1
    assert lines(result)[("mobizon", "key")] == "REFUSED"
    assert "code 8" in result.stdout
    assert "fake" not in result.stdout  # only the provider asked for


def test_an_unreachable_host_is_named(tmp_path: Path) -> None:
    result = check(tmp_path, "mobizon", mobizon={"api_key": KEY,
                                                 "base_url": "http://127.0.0.1:9"})
    assert result.returncode == 1
    assert lines(result)[("mobizon", "host")] == "REFUSED"
    assert "unreachable" in result.stdout


def test_an_unknown_slug_is_a_usage_error(tmp_path: Path) -> None:
    result = check(tmp_path, "nosuch")
    assert result.returncode == 2
    assert "not configured" in result.stderr


def test_skycore_is_asked_for_sending_statistics_not_a_send(tmp_path: Path) -> None:
    """PROTOCOLS.md §3.5: getSendingStatus is an authenticated call that sends nothing."""
    from standins.skycore import SkycoreStandIn

    with SkycoreStandIn(api_key="sky-key") as sky:
        settings = {"shortcode": "60856", "callback_token": "t", "base_url": sky.url}
        good = check(tmp_path, "skycore", skycore={**settings, "api_key": "sky-key"})
        bad = check(tmp_path, "skycore", skycore={**settings, "api_key": "other"})
        actions = [r.fields["ACTION"] for r in sky.requests]
    assert good.returncode == 0, good.stdout + good.stderr
    assert lines(good)[("skycore", "key")] == "ok"
    assert bad.returncode == 1
    assert lines(bad)[("skycore", "key")] == "REFUSED" and "E104" in bad.stdout
    assert actions == ["getSendingStatus", "getSendingStatus"]


def test_alphasms_is_asked_for_its_balance(tmp_path: Path) -> None:
    """PROTOCOLS.md §4.2: http.php `command=balance`; refusals come as `errors:` lines."""
    from standins.alphasms import AlphaSmsStandIn

    with AlphaSmsStandIn(api_key="al-key") as alpha:
        good = check(tmp_path, "alphasms", alphasms={"api_key": "al-key", "sender": "Shop",
                                                     "base_url": alpha.url})
        bad = check(tmp_path, "alphasms", alphasms={"api_key": "other", "sender": "Shop",
                                                    "base_url": alpha.url})
        commands = [r.command for r in alpha.requests]
    assert good.returncode == 0, good.stdout + good.stderr
    assert lines(good)[("alphasms", "key")] == "ok" and "125.40" in good.stdout
    assert bad.returncode == 1
    assert lines(bad)[("alphasms", "key")] == "REFUSED"
    assert commands == ["balance", "balance"]


def test_mobivate_is_asked_for_an_unknown_message(tmp_path: Path) -> None:
    """PROTOCOLS.md §2.5 (`GET /message/{id}`): 404 for an unknown id means the key passed."""
    from standins.mobivate import MobivateStandIn

    with MobivateStandIn(api_key="mv-key") as mv:
        settings = {"sender": "Shop", "callback_token": "mv-token", "base_url": mv.url}
        good = check(tmp_path, "mobivate", mobivate={**settings, "api_key": "mv-key"})
        bad = check(tmp_path, "mobivate", mobivate={**settings, "api_key": "other"})
        sends = mv.sends
    assert good.returncode == 0, good.stdout + good.stderr
    assert lines(good)[("mobivate", "key")] == "ok"
    assert bad.returncode == 1 and lines(bad)[("mobivate", "key")] == "REFUSED"
    assert sends == []


def setup(tmp_path: Path, slug: str, **providers: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env.update({"TRACKER_DATABASE_URL": f"sqlite:///{tmp_path / 'check.sqlite3'}",
                "TRACKER_SECRET_KEY": "check-test-secret",
                "TRACKER_PUBLIC_BASE_URL": "https://sms.example.com",
                "TRACKER_PROVIDERS__FAKE__CALLBACK_TOKEN": "fake-token"})
    for name, settings in providers.items():
        for key, value in settings.items():
            env[f"TRACKER_PROVIDERS__{name.upper()}__{key.upper()}"] = value
    return subprocess.run([sys.executable, "-m", "tracker.cli", "providers", "setup", slug],
                          env=env, text=True, capture_output=True, timeout=60, check=False)


def test_mobivate_setup_registers_our_receipt_url(tmp_path: Path) -> None:
    """PROTOCOLS.md §2.3: `POST /webhooks/receipt` with `{"url": …}` (Bearer) registers the
    account's DLR URL; the operator needs no control panel."""
    from standins.mobivate import MobivateStandIn

    with MobivateStandIn(api_key="mv-key") as mv:
        result = setup(tmp_path, "mobivate", mobivate={
            "sender": "Shop", "callback_token": "mv-token", "base_url": mv.url,
            "api_key": "mv-key"})
        registered = mv.receipt_url
    assert result.returncode == 0, result.stdout + result.stderr
    assert registered == "https://sms.example.com/callbacks/mobivate/mv-token"
    assert "mv-token" not in result.stdout  # the secret path token is masked on screen


def test_setup_of_a_provider_without_such_an_api_says_where_to_set_it(tmp_path: Path) -> None:
    result = setup(tmp_path, "fake")
    assert result.returncode == 1
    assert "control panel" in result.stderr

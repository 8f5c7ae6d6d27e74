"""Settings layers and their validation: a bad key fails at start, naming it."""

from __future__ import annotations

import pytest

from tracker import create_app
from tracker.settings import ConfigError, from_env, load

SKY = {"api_key": "k", "shortcode": "1", "callback_token": "t"}


def test_layers_defaults_file_env_test(tmp_path, monkeypatch) -> None:
    config = tmp_path / "tracker.toml"
    config.write_text('default_region = "KZ"\ncallback_max_bytes = 2048\n'
                      'default_provider = "skycore"\n'
                      '[providers.skycore]\napi_key = "from-file"\nshortcode = "60856"\n'
                      'callback_token = "tok"\n')
    monkeypatch.setenv("TRACKER_CONFIG", str(config))
    monkeypatch.setenv("TRACKER_CALLBACK_MAX_BYTES", "4096")
    monkeypatch.setenv("TRACKER_PROVIDERS__SKYCORE__API_KEY", "from-env")
    cfg = load({"instance_dir": str(tmp_path / "instance")} | {"default_region": "UZ"})
    assert cfg["callback_max_bytes"] == 4096  # env beats file
    assert cfg["providers"]["skycore"]["api_key"] == "from-env"
    assert cfg["providers"]["skycore"]["shortcode"] == "60856"  # file beats default
    assert cfg["default_region"] == "UZ"  # test dict beats env
    assert cfg["database_url"].startswith("sqlite:///") and cfg["secret_key"]


def test_fake_is_configured_only_until_real_providers_are(tmp_path) -> None:
    """Out of the box the offline provider is there; a deployment that names its providers
    has those alone (its dashboard offers no "fake"), unless it names fake too."""
    assert set(load({"instance_dir": str(tmp_path)} | {})["providers"]) == {"fake"}
    real = {"providers": {"skycore": SKY}, "default_provider": "skycore"}
    assert set(load({"instance_dir": str(tmp_path)} | real)["providers"]) == {"skycore"}
    both = {"providers": {"skycore": SKY, "fake": {}}}
    assert set(load({"instance_dir": str(tmp_path)} | both)["providers"]) == {"skycore", "fake"}


def test_default_provider_is_the_only_one_configured(tmp_path) -> None:
    """One provider configured: sends naming none go to it, without saying so twice. Several:
    fake while it is among them (as out of the box), else the setting is required."""
    only = load({"instance_dir": str(tmp_path)} | {"providers": {"skycore": SKY}})
    assert only["default_provider"] == "skycore"
    assert load({"instance_dir": str(tmp_path)})["default_provider"] == "fake"
    with_fake = load({"instance_dir": str(tmp_path)} | {"providers": {"skycore": SKY, "fake": {}}})
    assert with_fake["default_provider"] == "fake"
    chosen = {"providers": {"skycore": SKY, "fake": {}}, "default_provider": "skycore"}
    assert load({"instance_dir": str(tmp_path)} | chosen)["default_provider"] == "skycore"
    two = {"providers": {"skycore": SKY, "mobizon": {"api_key": "k", "callback_token": "t"}}}
    with pytest.raises(ConfigError, match=r"default_provider: required when several providers"
                                          r" are configured; one of: mobizon, skycore"):
        load({"instance_dir": str(tmp_path)} | two)


def test_default_region_is_taken_in_either_case(tmp_path) -> None:
    assert load({"instance_dir": str(tmp_path), "default_region": " kz"})["default_region"] == "KZ"
    assert load({"instance_dir": str(tmp_path)})["default_region"] == ""


def test_secret_key_is_generated_once_outside_the_repo(tmp_path) -> None:
    first = load({"instance_dir": str(tmp_path)} | {})["secret_key"]
    assert first == load({"instance_dir": str(tmp_path)} | {})["secret_key"] and len(first) > 40
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(("overrides", "named"), [
    ({"providers": {"fake": {}, "skycore": {"shortcode": "1", "callback_token": "t"}}},
     "providers.skycore.api_key"),
    ({"providers": {"fake": {}, "skycore": {**SKY, "apikey": "x"}}}, "providers.skycore.apikey"),
    ({"providers": {"fake": {}, "skycore": {**SKY, "api_key": 5}}}, "providers.skycore.api_key"),
    ({"providers": {"fake": {}, "nosuch": {}}}, "providers.nosuch"),
    ({"providers": {"skycore": SKY}, "default_provider": "fake"},
     "default_provider"),  # fake no longer there
    ({"callback_max_bytes": "big"}, "callback_max_bytes"),
    ({"databse_url": "x"}, "databse_url"),
    ({"default_provider": "skycore"}, "default_provider"),
    ({"public_base_url": "example.com"}, "public_base_url"),
    ({"database_url": "mysql://x"}, "database_url"),
    ({"default_region": "KAZ"}, "default_region"),  # a typo no longer makes numbers invalid
    ({"default_region": "XX"}, "default_region"),
])
def test_bad_settings_fail_at_start_naming_the_key(tmp_path, overrides, named) -> None:
    with pytest.raises((ConfigError, ValueError), match=named.replace(".", r"\.")):
        create_app({"database_url": f"sqlite:///{tmp_path}/x.db", **overrides})


def test_env_numbers_are_checked() -> None:
    with pytest.raises(ConfigError, match="TRACKER_CALLBACK_MAX_BYTES"):
        from_env({"TRACKER_CALLBACK_MAX_BYTES": "lots"})
    assert from_env({"TRACKER_TEST_DATABASE_URL": "x", "OTHER": "y"}) == {}
    # Read by `tracker users create` and `set-password`, not a setting of the service.
    assert from_env({"TRACKER_NEW_PASSWORD": "x", "TRACKER_CONFIG": "y"}) == {}


def test_the_instance_folder_is_the_working_directory_s_unless_configured(
        tmp_path, monkeypatch) -> None:
    """An installed package must never write into site-packages: instance/ is found where
    `tracker` is started, or where instance_dir / TRACKER_INSTANCE_DIR say, and is absolute
    from then on (the children of `tracker serve` may run elsewhere)."""
    monkeypatch.chdir(tmp_path)
    cfg = load({})
    assert cfg["instance_dir"] == str(tmp_path / "instance")
    assert cfg["database_url"] == f"sqlite:///{tmp_path / 'instance' / 'tracker.sqlite3'}"
    assert (tmp_path / "instance" / "secret_key").exists()
    monkeypatch.setenv("TRACKER_INSTANCE_DIR", "data")
    assert load({})["instance_dir"] == str(tmp_path / "data")
    assert load({"instance_dir": str(tmp_path / "x")})["instance_dir"] == str(tmp_path / "x")

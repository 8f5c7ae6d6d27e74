"""The web workers' collector settings (tracker.gctune): on at every worker's start."""

from __future__ import annotations

import gc
import importlib

from tracker import gctune


def test_tuning_freezes_what_exists_and_collects_young_objects_less_often() -> None:
    before = gc.get_threshold()
    try:
        gctune.tune_for_serving()
        assert gc.get_threshold()[0] == gctune.YOUNG_THRESHOLD
        assert gc.get_threshold()[1:] == before[1:]
        assert gc.get_freeze_count() > 0  # this process's modules are out of the collector's way
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_every_gunicorn_worker_tunes_itself_once_the_app_is_loaded(monkeypatch) -> None:
    """gunicorn calls post_worker_init after loading the app in a worker (`tracker serve` and
    config/gunicorn.conf.py read the same settings module)."""
    from gunicorn.app.base import Application

    class Settings(Application):
        def init(self, *args):
            return None

        def load(self):
            return None

        def load_config(self):
            self.load_config_from_module_name_or_filename("python:tracker.gunicorn_conf")

    conf = importlib.import_module("tracker.gunicorn_conf")
    assert Settings().cfg.post_worker_init is conf.post_worker_init  # gunicorn took the hook
    called = []
    monkeypatch.setattr(gctune, "tune_for_serving", lambda: called.append(True))
    conf.post_worker_init(object())
    assert called == [True]

# gunicorn -c config/gunicorn.conf.py --bind 0.0.0.0:8000 wsgi:app
# The settings live in the package so `tracker serve` and a hand-run gunicorn agree.
from tracker.gunicorn_conf import *  # noqa: F403

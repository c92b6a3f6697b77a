"""Gunicorn settings for the Procfile: the package's own (palaver/web/gunicorn_config.py), so a wheel has them too."""

from palaver.web.gunicorn_config import *  # noqa: F403  (gunicorn reads its settings from this module's names)

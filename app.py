"""The WSGI entry point that the Procfile names: gunicorn serves `app:app`."""

from palaver.web.app import create_app

__all__ = ["app", "create_app"]

app = create_app()

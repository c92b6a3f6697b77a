"""Gunicorn's settings: the package's module and the Procfile's gunicorn.conf.py give gunicorn the same ones."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READ = """
import sys
from gunicorn.app.base import Application
class Read(Application):
    def init(self, parser, opts, args): pass
    def load(self): pass
app = Read.__new__(Read)
procfiles = app.get_config_from_filename("gunicorn.conf.py")
for found in (procfiles, app.get_config_from_module_name("palaver.web.gunicorn_config")):
    names = ("bind", "workers", "worker_class", "threads", "timeout", "keepalive", "on_starting", "post_fork",
             "post_worker_init")
    print({name: getattr(found.get(name), "__name__", found.get(name)) for name in names})
import gc
frozen = gc.get_freeze_count()
procfiles.get("post_worker_init")(None)
print(gc.get_freeze_count() > frozen)
"""


def test_the_procfiles_config_and_the_packages_module_give_gunicorn_the_same_settings():
    env = {"PORT": "8123", "PALAVER_WORKERS": "2", "PALAVER_HTTP_THREADS": "5"}
    done = subprocess.run([sys.executable, "-c", READ], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    procfiles, packages, froze = done.stdout.splitlines()
    assert procfiles == packages
    assert "'bind': '0.0.0.0:8123'" in packages and "'workers': 2" in packages and "'threads': 5" in packages
    assert "'post_fork': 'post_fork'" in packages and "'on_starting': 'on_starting'" in packages
    assert "'post_worker_init': 'post_worker_init'" in packages and froze == "True", "the worker freezes its imports"

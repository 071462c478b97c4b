"""gunicorn.conf.py from any working directory: its logger class (gunicorn's own lines as JSON) must load where
gunicorn is started elsewhere or told to --chdir elsewhere, as bench/http.py does for its bare app; it did not
("class uri 'core.gunicorn_logging.Logger' invalid or not found")."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_logger_class_loads_from_another_directory(tmp_path):
    script = ("import runpy; from gunicorn.util import load_class;"
              f" settings = runpy.run_path({str(ROOT / 'gunicorn.conf.py')!r});"
              " print(load_class(settings['logger_class']).__module__)")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "core.gunicorn_logging"

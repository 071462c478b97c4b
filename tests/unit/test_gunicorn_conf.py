import runpy
from pathlib import Path

CONF = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"


def test_each_instance_on_a_machine_has_its_own_control_socket(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("BIND", "127.0.0.1:8001")
    first = runpy.run_path(str(CONF))["control_socket"]
    monkeypatch.setenv("BIND", "127.0.0.1:8002")
    second = runpy.run_path(str(CONF))["control_socket"]
    assert first != second
    assert ".gunicorn" not in first and "8001" in first

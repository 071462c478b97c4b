import re
from pathlib import Path

from core.config import SETTINGS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme_configuration_table():
    missing = [name for name in SETTINGS if f"| `{name}` |" not in README]
    assert missing == []


def test_the_readme_stops_only_the_processes_it_started():
    # `pkill -f "flask --app app"` stopped every dispatcher and worker of every checkout on the machine (the operations
    # audit watched it match another instance's dispatcher), not only the two the production section started.
    assert "pkill" not in README and "killall" not in README
    for name in ("web", "dispatch", "worker"):
        assert f"/tmp/wallet-{name}.pid" in README.split("Stop everything with", 1)[1].split("\n\n", 1)[0]


def test_every_variable_gunicorn_conf_reads_is_in_the_readme():
    # BIND appeared only inside the production block; WEB_CONCURRENCY (how many web processes, and so how many
    # database connections), GUNICORN_THREADS, GUNICORN_TIMEOUT and the other two were documented nowhere but there.
    conf = (Path(__file__).resolve().parents[2] / "gunicorn.conf.py").read_text(encoding="utf-8")
    read = set(re.findall(r"(?:os\.environ(?:\.get\(|\[)|_whole\()\"([A-Z_]+)\"", conf))
    assert read >= {"BIND", "WEB_CONCURRENCY", "GUNICORN_TIMEOUT"}
    configuration = README.split("## Configuration", 1)[1]
    assert [name for name in sorted(read) if f"`{name}`" not in configuration] == []

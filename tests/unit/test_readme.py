from pathlib import Path

from core.config import SETTINGS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme_configuration_table():
    missing = [name for name in SETTINGS if f"| `{name}` |" not in README]
    assert missing == []

"""The README's word on DESIGN.md holds (found by the docs audit: it said the design was "kept in agreement with this
code", and a client developer reading DESIGN 7 looked for merchant API keys, signed requests and notifications, and
R14's payment by QR code, none of which the API has)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from app import create_app

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
INTRO = README.split("## The two commands", 1)[0]

# A DESIGN feature, a word every path serving it would hold, and the words the README's introduction names it by.
NOT_BUILT = [
    ("merchant API keys and signed requests (DESIGN 7)", "merchant", "merchant API"),
    ("payment by QR code (R14)", "qr", "QR code"),
]


def test_the_readme_names_every_design_feature_the_api_does_not_have(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", "WALLET_ENV": "test",
                      "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl")})
    paths = [rule.rule.lower() for rule in app.url_map.iter_rules()]
    for feature, word, named in NOT_BUILT:
        if not any(word in path for path in paths):
            assert named in INTRO, f"the README does not say that {feature} is not built"


def test_the_production_block_run_again_keeps_the_password_pepper_and_the_metrics_token(tmp_path):
    """The block made a fresh ``PASSWORD_PEPPER`` each time it ran ("keep it: hashes need it"), and it is written to run
    again (it creates the database only when missing, and the migrations apply only what is new): started again after
    a reboot, with every password, payment password, one-time code and card fingerprint keyed by the old pepper, no
    one could log in or pay, and every owner's tries locked their account (found by the docs audit)."""
    block = re.search(r"<!-- production:.*?-->\n```bash\n(.*?)```", README, re.S).group(1)
    secret_lines = "\n".join(line for line in block.splitlines() if "~/.wallet-" in line)  # where the block keeps them
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    show = '\necho "$PASSWORD_PEPPER $METRICS_TOKEN"'
    runs = [subprocess.run(["bash", "-euo", "pipefail", "-c", secret_lines + show], env=env, capture_output=True,
                           text=True, check=True).stdout.split() for _ in range(2)]
    assert [len(secret) >= 32 for secret in runs[0]] == [True, True] and runs[0] == runs[1]


def test_every_rate_limit_that_is_no_setting_is_in_the_readme():
    """The README's configuration table lists the configurable limits; real-name verification's fixed one (10 per
    account a day, a 429 a client developer meets) was named nowhere (found by the docs audit)."""
    root = Path(__file__).resolve().parents[2]
    fixed = []
    for package in ("core", "notifications", "security", "wallet"):
        for source in (root / package).glob("*.py"):
            text = source.read_text(encoding="utf-8")
            for constant in re.findall(r"@(?:limiter\.)?limit\(([A-Z_]+)\b", text):  # core.ratelimit.limit
                fixed += re.findall(rf'^{constant} = "([^"]+)"', text, re.M)
    assert fixed, "no fixed limit found: the test no longer reads the code"
    assert [limit for limit in fixed if f"`{limit}`" not in README] == []

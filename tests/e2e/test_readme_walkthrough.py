"""The README's curl walkthrough, run verbatim against a live ``flask dev`` server."""

import re
import shutil
import subprocess

import pytest

from tests.e2e.server import ROOT, DevServer

pytestmark = pytest.mark.e2e


def walkthrough() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- walkthrough:.*?-->\n```bash\n(.*?)```", readme, re.S)
    assert block, "the README lost its walkthrough block"
    return block.group(1)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readme_walkthrough_works_as_written(tmp_path):
    with DevServer(tmp_path) as server:
        script = walkthrough().replace("http://127.0.0.1:5000", server.url)
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120, check=False)
    output = result.stdout
    assert result.returncode == 0, result.stderr + output
    assert '"accepted":true' in output
    assert '"phone":"+12025550123"' in output
    assert "device_verification_required" in output
    assert '"verified":true' in output
    assert output.count('"code":"invalid_credentials"') == 2 and '"code":"login_locked"' in output
    for event in ("registered", "new_device_login", "login_locked"):
        assert f'"event": "{event}"' in output

"""``bin/ensure_browser.sh``, run by ``make test`` before any test: the browser tests' Chromium and
ChromeDriver are there, installed, or asked for with the exact command."""

import subprocess
from pathlib import Path

from tests.support.processes import ROOT

SCRIPT = ROOT / "bin" / "ensure_browser.sh"


def fake_command(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def run_script(path_dir: Path) -> subprocess.CompletedProcess:
    # PATH holds only the fakes: the machine's own chromium, id and apt-get stay out of it.
    return subprocess.run(
        ["/bin/bash", str(SCRIPT)], env={"PATH": str(path_dir)}, capture_output=True, text=True, timeout=30, check=False
    )


def test_nothing_is_done_when_chromium_and_chromedriver_are_on_the_path(tmp_path):
    fake_command(tmp_path, "chromium", "exit 0")
    fake_command(tmp_path, "chromedriver", "exit 0")
    fake_command(tmp_path, "apt-get", f"echo called > {tmp_path}/apt-called")

    result = run_script(tmp_path)

    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "apt-called").exists()


def test_root_installs_them_with_apt_get_when_missing(tmp_path):
    fake_command(tmp_path, "id", "echo 0")
    fake_command(tmp_path, "apt-get", f'echo "$@" >> {tmp_path}/apt-calls')

    result = run_script(tmp_path)

    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "apt-calls").read_text().splitlines()
    assert calls[0] == "update -qq"
    assert calls[1] == "install -y -qq chromium chromium-driver"


def test_another_user_is_stopped_at_once_with_the_exact_command(tmp_path):
    fake_command(tmp_path, "id", "echo 1000")
    fake_command(tmp_path, "apt-get", f"echo called > {tmp_path}/apt-called")

    result = run_script(tmp_path)

    assert result.returncode == 1
    assert "sudo sh -c 'apt-get update && apt-get install -y chromium chromium-driver'" in result.stderr
    assert not (tmp_path / "apt-called").exists()

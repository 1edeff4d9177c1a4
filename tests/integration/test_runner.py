"""The ansible-runner entry point (kata_osbuilder_runner) for CI: a real build, its JSON summary and exit code."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root")


def runner(*args: str, timeout: int = 1200) -> tuple[subprocess.CompletedProcess, dict]:
    r = subprocess.run([sys.executable, "-m", "kata_osbuilder_runner", *args], cwd=REPO, capture_output=True,
                       text=True, timeout=timeout)
    return r, json.loads(r.stdout)


@pytest.mark.slow
def test_runner_builds_an_initrd_and_summarises(ref_agent, tmp_path):
    r, summary = runner("--target", "initrd", "--agent-init", "yes", "--agent-source-bin", str(ref_agent),
                        "--images-build-dest", str(tmp_path), "--json", str(tmp_path / "summary.json"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "successful" and summary["failures"] == []
    # phases, in order, each with its time; the progress lines on stderr say the same
    assert list(summary["phases"]) == ["bootstrap", "provision", "pack"]
    for name, phase in summary["phases"].items():
        assert phase["status"] == "ok" and phase["seconds"] > 0, (name, phase)
        assert f"{name}: started" in r.stderr and f"{name}: done (" in r.stderr
    assert sum(p["seconds"] for p in summary["phases"].values()) <= summary["elapsed_seconds"]
    [artifact] = summary["artifacts"]
    path = Path(artifact["path"])
    assert path == tmp_path / "kata-containers-initrd.img" and path.is_file()
    assert artifact["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and artifact["sha256_verified"]
    assert artifact["size"] == path.stat().st_size
    assert artifact["arch"] == os.uname().machine and artifact["kind"] == "initrd"
    assert (tmp_path / "kata-containers-initrd.img.sha256").read_text().split()[0] == artifact["sha256"]
    assert summary["hosts"]["localhost"]["failures"] == 0


def test_runner_failure_names_task_and_host_and_exits_1(ref_agent, tmp_path):
    r, summary = runner("--target", "initrd", "--arch", "s390x", "--use-qemu-user", "false", "--agent-init", "yes",
                        "--agent-source-bin", str(ref_agent), "--images-build-dest", str(tmp_path), timeout=300)
    assert r.returncode == 1
    assert summary["status"] == "failed" and summary["artifacts"] == []
    [failure] = summary["failures"]
    assert failure["host"] == "localhost" and failure["phase"] == "bootstrap"
    assert failure["task"] == "Check a foreign architecture may use qemu-user"
    assert failure["msg"].startswith("No builder for s390x")
    assert summary["phases"]["bootstrap"]["status"] == "failed" and "provision" not in summary["phases"]
    assert "FAILED localhost: Check a foreign architecture may use qemu-user: No builder for s390x" in r.stderr


def test_runner_usage_errors_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "kata_osbuilder_runner", "--inventory", str(tmp_path / "nope")],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "inventory" in r.stderr
    r = subprocess.run([sys.executable, "-m", "kata_osbuilder_runner", "--agent-init", "maybe"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "expected yes or no" in r.stderr


def test_console_script_is_declared():
    text = (REPO / "pyproject.toml").read_text()
    assert 'kata-osbuilder-build = "kata_osbuilder_runner.cli:main"' in text

"""roles/bootstrap/files/cache_entry.py: manifest check of cache entries, stale partial entries."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "roles/bootstrap/files/cache_entry.py"


def run(*args: str) -> list[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          check=True).stdout.splitlines()


def make_partial(entry: Path) -> None:
    root = Path(str(entry) + ".partial") / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=debian\n")
    (root / "bin").symlink_to("usr/bin")
    (root.parent / "complete").write_text(json.dumps({"distro": "debian"}))


def publish(entry: Path) -> None:
    os.rename(str(entry) + ".partial", entry)


def test_sealed_entry_is_ok_until_its_tree_changes(tmp_path):
    entry = tmp_path / "bootstrap" / "debian-x"
    make_partial(entry)
    manifest = run("seal", str(entry))[0]
    assert manifest.startswith("sha256:") and "files=3" in manifest
    publish(entry)
    assert run("check", str(entry)) == ["ok"]
    assert json.loads((entry / "complete").read_text())["manifest"] == manifest
    (entry / "rootfs/etc/os-release").write_text("ID=debian\nX=1\n")  # size changed
    out = run("check", str(entry))
    assert out[0].startswith(f"corrupt {entry}") and out[-1] == "missing"
    assert not entry.exists() and not list(entry.parent.glob("*.removing.*"))


def test_deleted_or_renamed_file_is_corrupt(tmp_path):
    for change in ("delete", "rename", "chmod"):
        entry = tmp_path / change / "e"
        make_partial(entry)
        run("seal", str(entry))
        publish(entry)
        f = entry / "rootfs/etc/os-release"
        {"delete": f.unlink, "rename": lambda: f.rename(f.with_name("os-release2")),
         "chmod": lambda: f.chmod(0o600)}[change]()
        assert run("check", str(entry))[-1] == "missing", change


def test_entry_without_complete_is_missing_and_legacy_one_adopted(tmp_path):
    entry = tmp_path / "e"
    assert run("check", str(entry)) == ["missing"]
    make_partial(entry)
    publish(entry)  # made before manifests existed
    out = run("check", str(entry))
    assert out[0].startswith("adopted") and out[-1] == "ok"
    assert run("check", str(entry)) == ["ok"]


def test_partial_entries_of_gone_builds_are_removed(tmp_path):
    dead = tmp_path / "dead"
    make_partial(dead)
    child = subprocess.Popen(["true"])
    child.wait()
    ns = os.readlink("/proc/self/ns/pid")
    (Path(str(dead) + ".partial") / ".owner").write_text(f"{child.pid} {ns} 12345\n")
    alive = tmp_path / "alive"
    make_partial(alive)
    start = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19]
    (Path(str(alive) + ".partial") / ".owner").write_text(f"{os.getpid()} {ns} {start}\n")
    other_ns = tmp_path / "otherns"  # a builder in another PID namespace: cannot tell, kept
    make_partial(other_ns)
    (Path(str(other_ns) + ".partial") / ".owner").write_text(f"{child.pid} pid:[1] 1\n")
    young = tmp_path / "young"  # unknown owner, not six hours old: kept
    make_partial(young)
    out = run("check", str(tmp_path / "other"))
    assert out[-1] == "missing" and any("removed stale" in line for line in out)
    assert not Path(str(dead) + ".partial").exists()
    assert Path(str(alive) + ".partial").exists() and Path(str(young) + ".partial").exists()
    assert Path(str(other_ns) + ".partial").exists()

"""Initrds made by cpio_archive boot the Debian cloud kernel under QEMU TCG, every compression."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from ansible_collections.kata.osbuilder.plugins.module_utils import cpio
from tests.support import vm


@pytest.fixture
def workdir():
    path = Path(tempfile.mkdtemp(prefix="cpio-boot."))
    yield path
    shutil.rmtree(path)


@pytest.mark.boot
@pytest.mark.parametrize("compression", ["gzip", "zstd", "xz", "lz4", "none"])
def test_initrd_with_ref_agent_as_init_boots(kernel, ref_agent: Path, workdir: Path,
                                             compression: str) -> None:
    root = workdir / "root"
    root.mkdir()
    shutil.copy2(ref_agent, root / "init")
    (root / "init").chmod(0o755)
    initrd = workdir / f"initrd.{compression}"
    result = cpio.build(root, initrd, compression=compression, mtime=0, environ={},
                        extra_entries=[{"path": "dev/console", "type": "char",
                                        "major": 5, "minor": 1, "mode": 0o600}])
    assert result["entries"] == 3  # dev, dev/console, init
    boot = vm.boot(kernel, initrd=initrd, append="kata_ref_agent.poweroff", timeout=120)
    assert boot.ready is not None, f"{compression} initrd did not boot:\n{boot.console[-3000:]}"
    assert boot.ready.group(1) == "1" and not boot.timed_out

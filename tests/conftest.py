"""Shared pytest setup: import the collection from this checkout, fixtures for kernel and agent."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# `import ansible_collections.kata.osbuilder...` resolves through the checkout's link.
sys.path.insert(0, str(REPO / ".collections"))
sys.path.insert(0, str(REPO))

from tests.support import vm  # noqa: E402


@pytest.fixture(scope="session")
def kernel() -> vm.Kernel:
    return vm.debian_kernel()


@pytest.fixture(scope="session")
def ref_agent() -> Path:
    return vm.ref_agent()


@pytest.fixture(scope="module")
def agent_tree(tmp_path_factory, ref_agent) -> Path:
    """A minimal root: the reference agent as /sbin/init, and dev, proc, sys."""
    src = tmp_path_factory.mktemp("agent-tree") / "root"
    (src / "sbin").mkdir(parents=True)
    for d in ("dev", "proc", "sys"):
        (src / d).mkdir()
    shutil.copy2(ref_agent, src / "sbin" / "init")
    return src

"""Run kata.osbuilder's playbooks through ansible-runner, for CI: progress per phase, a JSON summary.

    kata-osbuilder-build --target initrd --agent-init yes --agent-source-bin ./kata-agent
    python3 -m kata_osbuilder_runner --target image --arch x86_64,aarch64 --inventory inventories/example

The Python API is :func:`build`, which returns the summary as a dict.
"""
from __future__ import annotations

from .core import PHASES, Summary, build, phase_of

__all__ = ["PHASES", "Summary", "build", "phase_of"]
__version__ = "0.1.0"

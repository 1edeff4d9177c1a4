"""The build through ansible-runner: events -> phases, artifacts and failures."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, TextIO

PHASES = ("bootstrap", "provision", "pack")

# Play names of playbooks/*.yml -> phase. Builder choice and checks count as bootstrap, collecting
# the artifacts as pack.
_PLAY_PHASES = (
    ("Choose the builders", "bootstrap"),
    ("Check the builders", "bootstrap"),
    ("Prepare the builder and bootstrap", "bootstrap"),
    ("Provision the rootfs", "provision"),
    ("Route the build method", "provision"),
    ("Build the guest with dracut", "provision"),
    ("Pack the", "pack"),
    ("Collect the", "pack"),
)


def phase_of(play_name: str) -> str | None:
    for prefix, phase in _PLAY_PHASES:
        if play_name.startswith(prefix):
            return phase
    return None


def default_project_dir() -> Path:
    """The collection checkout: KATA_OSBUILDER_DIR, else the directory holding this package."""
    env = os.environ.get("KATA_OSBUILDER_DIR")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[1]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _first_line(text: Any) -> str:
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _failure_msg(res: dict) -> str:
    msg = _first_line(res.get("msg"))
    if (not msg or msg.startswith("One or more items failed")) and isinstance(res.get("results"), list):
        for item in res["results"]:
            if isinstance(item, dict) and item.get("failed"):
                msg = _first_line(item.get("msg")) or _first_line(item.get("stderr")) or msg
                break
    if not msg:
        msg = _first_line(res.get("stderr")) or _first_line(res.get("stdout")) or "failed"
    return msg


@dataclasses.dataclass
class Summary:
    """What the event handler gathers; to_dict() is the JSON summary."""
    target: str
    playbook: str
    inventory: str
    extravars: dict
    started: float = dataclasses.field(default_factory=time.monotonic)
    phases: dict = dataclasses.field(default_factory=dict)  # phase -> {"seconds", "status", "plays"}
    artifacts: list = dataclasses.field(default_factory=list)
    rootfs: list = dataclasses.field(default_factory=list)
    failures: list = dataclasses.field(default_factory=list)
    stats: dict = dataclasses.field(default_factory=dict)
    status: str = "running"
    rc: int | None = None
    elapsed: float = 0.0
    _current: str | None = None
    _since: float = 0.0
    _play: str = ""
    _last_failure: dict = dataclasses.field(default_factory=dict)  # host -> failure

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "rc": self.rc,
            "target": self.target,
            "playbook": self.playbook,
            "inventory": self.inventory,
            "elapsed_seconds": round(self.elapsed, 2),
            "phases": {p: {**v, "seconds": round(v["seconds"], 2)} for p, v in self.phases.items()},
            "artifacts": self.artifacts,
            "rootfs": self.rootfs,
            "failures": self.failures,
            "hosts": self.stats,
        }


class _Handler:
    """ansible-runner event_handler: phases and their times, artifacts, the failing task per host."""

    def __init__(self, summary: Summary, progress: TextIO | None, verbose: bool):
        self.s = summary
        self.out = progress
        self.verbose = verbose

    def say(self, text: str) -> None:
        if self.out:
            self.out.write(f"[{time.monotonic() - self.s.started:7.1f}s] {text}\n")
            self.out.flush()

    def _close_phase(self, now: float, status: str | None = None) -> None:
        cur = self.s._current
        if cur:
            entry = self.s.phases[cur]
            took = now - self.s._since
            entry["seconds"] += took
            if status:
                entry["status"] = status
            self.say(f"{cur}: {'done' if entry['status'] == 'ok' else entry['status']} ({entry['seconds']:.1f}s)")

    def __call__(self, event: dict) -> bool:
        kind = event.get("event")
        data = event.get("event_data") or {}
        now = time.monotonic()
        if kind == "playbook_on_play_start":
            name = data.get("play") or data.get("name") or ""
            self.s._play = name
            phase = phase_of(name) or self.s._current or "bootstrap"
            if phase != self.s._current:
                self._close_phase(now)
                self.s._current, self.s._since = phase, now
                self.s.phases.setdefault(phase, {"seconds": 0.0, "status": "ok", "plays": []})
                self.say(f"{phase}: started")
            self.s.phases[phase]["plays"].append(name)
            if self.verbose:
                self.say(f"  play: {name}")
        elif kind == "playbook_on_task_start" and self.verbose:
            self.say(f"    task: {data.get('task')}")
        elif kind == "runner_on_ok":
            res = data.get("res") or {}
            facts = res.get("ansible_facts") or {}
            if "kata_artifact" in facts:
                self.s.artifacts.append(dict(facts["kata_artifact"]))
            if "preflight_target" in facts:
                t = facts["preflight_target"]
                self.s.rootfs.append({"host": data.get("host"), "arch": t.get("arch"), "path": t.get("rootfs_dir")})
        elif kind in ("runner_on_failed", "runner_on_unreachable"):
            if data.get("ignore_errors"):
                return True
            res = data.get("res") or {}
            failure = {
                "host": data.get("host"),
                "task": data.get("task"),
                "play": self.s._play,
                "phase": self.s._current,
                "unreachable": kind == "runner_on_unreachable",
                "msg": _failure_msg(res),
            }
            self.s._last_failure[data.get("host")] = failure
            if self.s._current in self.s.phases:
                self.s.phases[self.s._current]["status"] = "failed"
            if self.verbose:
                self.say(f"  {failure['host']}: {failure['task']}: {failure['msg']}")
        elif kind == "playbook_on_stats":
            self._close_phase(now)
            self.s._current = None
            keys = ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")
            for key in keys:
                for host, n in (data.get(key) or {}).items():
                    counts = self.s.stats.setdefault(host, {k if k != "dark" else "unreachable": 0 for k in keys})
                    counts[key if key != "dark" else "unreachable"] = n
        return True


def build(target: str = "image", *, extravars: dict | None = None, inventory: str | os.PathLike | None = None,
          project_dir: str | os.PathLike | None = None, progress: TextIO | None = sys.stderr,
          verbose: bool = False, verbosity: int = 0, cancel: Callable[[], bool] | None = None) -> dict:
    """Run playbooks/<target>.yml and return the summary (status, phases, artifacts, failures)."""
    import ansible_runner  # the run-time dependency of this entry point only

    if target not in ("image", "initrd", "rootfs"):
        raise ValueError(f"target must be image, initrd or rootfs, not {target!r}")
    project = Path(project_dir).resolve() if project_dir else default_project_dir()
    playbook = project / "playbooks" / f"{target}.yml"
    if not playbook.is_file():
        raise FileNotFoundError(f"{playbook} not found (set --project-dir or KATA_OSBUILDER_DIR to a kata.osbuilder checkout)")
    inv = Path(inventory).resolve() if inventory else project / "inventories" / "local" / "hosts.yml"
    if not inv.exists():
        raise FileNotFoundError(f"inventory {inv} not found")
    summary = Summary(target=target, playbook=str(playbook), inventory=str(inv), extravars=dict(extravars or {}))
    handler = _Handler(summary, progress, verbose)
    private = tempfile.mkdtemp(prefix="kata-osbuilder-runner.")
    try:
        kwargs: dict[str, Any] = dict(
            private_data_dir=private, project_dir=str(project), playbook=str(playbook), inventory=str(inv),
            extravars=dict(extravars or {}), event_handler=handler, quiet=True, verbosity=verbosity or None,
            envvars={"ANSIBLE_CONFIG": str(project / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"},
            settings={"suppress_ansible_output": True}, rotate_artifacts=1,
        )
        if cancel:
            kwargs["cancel_callback"] = cancel
        r = ansible_runner.run(**{k: v for k, v in kwargs.items() if v is not None})
        summary.rc = r.rc
        summary.status = "successful" if r.status == "successful" and r.rc == 0 else (r.status or "failed")
    finally:
        shutil.rmtree(private, ignore_errors=True)
    summary.elapsed = time.monotonic() - summary.started
    if handler.s._current:  # no stats event (killed): close the running phase
        handler._close_phase(time.monotonic(), "failed")
    failed_hosts = {h for h, st in summary.stats.items() if st.get("failures") or st.get("unreachable")}
    summary.failures = [f for h, f in summary._last_failure.items() if h in failed_hosts or not summary.stats]
    for a in summary.artifacts:
        path = Path(a["path"])
        a["exists"] = path.is_file()
        a["size"] = path.stat().st_size if a["exists"] else None
        a["sha256_verified"] = a["exists"] and sha256_file(path) == a.get("sha256")
    if summary.status == "successful" and (summary.failures or not all(a["sha256_verified"] for a in summary.artifacts)
                                           or (target != "rootfs" and not summary.artifacts)):
        summary.status = "failed"
    return summary.to_dict()

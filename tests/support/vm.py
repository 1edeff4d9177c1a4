"""Boot harness for the tests and benchmarks: a Debian cloud kernel, the reference agent, QEMU TCG.

Nothing here needs KVM. Every QEMU started here is ended (by its PID) before the call returns.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
READY_RE = re.compile(r"kata-ref-agent: READY pid=(\d+) uptime=([0-9.]+) root=(\S+)")
KERNEL_PACKAGE = os.environ.get("KATA_OSB_TEST_KERNEL_PKG", "linux-image-cloud-amd64")


def cache_dir() -> Path:
    d = Path(os.environ.get("KATA_OSB_CACHE", Path.home() / ".cache" / "kata-osbuilder"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@dataclasses.dataclass(frozen=True)
class Kernel:
    vmlinuz: Path
    modules: Path  # .../lib/modules/<version>
    version: str


def _resolve_kernel_package(meta: str) -> str:
    """linux-image-cloud-amd64 is a meta package: follow Depends to the real image package."""
    out = subprocess.run(["apt-cache", "depends", meta], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            return line.split(":", 1)[1].strip()
    return meta


def debian_kernel() -> Kernel:
    """Download (once) and unpack a Debian cloud kernel; returns its paths."""
    root = cache_dir() / "kernel"
    stamp = root / "READY"
    if not stamp.exists():
        pkg = _resolve_kernel_package(KERNEL_PACKAGE)
        if root.exists():
            shutil.rmtree(root)
        tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix="kernel."))
        try:
            subprocess.run(["apt-get", "download", pkg], cwd=tmp, check=True, capture_output=True)
            debs = list(tmp.glob("*.deb"))
            if len(debs) != 1:
                raise RuntimeError(f"apt-get download {pkg} gave {debs}")
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "x")], check=True)
            debs[0].unlink()
            (tmp / "x" / "READY").write_text(pkg + "\n")
            os.rename(tmp / "x", root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))[0]
    version = vmlinuz.name[len("vmlinuz-"):]
    moddir = root / "lib" / "modules" / version
    if not moddir.exists():
        moddir = root / "usr" / "lib" / "modules" / version
    return Kernel(vmlinuz=vmlinuz, modules=moddir, version=version)


def ref_agent(arch: str | None = None) -> Path:
    """Build the reference agent (static) and return its path."""
    arch = arch or os.uname().machine
    out = REPO / "build" / "ref-agent" / arch / "kata-ref-agent"
    subprocess.run(["make", "-s", "-C", str(REPO / "tools" / "ref-agent"), f"ARCH={arch}", f"OUT={out}"],
                   check=True, capture_output=True)
    return out


@dataclasses.dataclass
class Boot:
    console: str
    seconds: float  # host wall clock from QEMU start to READY (or to exit)
    returncode: int | None
    timed_out: bool

    @property
    def ready(self) -> re.Match | None:
        return READY_RE.search(self.console)

    @property
    def guest_uptime(self) -> float | None:
        m = self.ready
        return float(m.group(2)) if m else None

    def checks(self) -> dict[str, str]:
        return dict(re.findall(r"kata-ref-agent: check (\S+) (present|absent)", self.console))


def boot(kernel: Kernel, *, initrd: Path | None = None, nvme: Path | None = None,
         nvdimm: Path | None = None, virtio: Path | None = None, append: str = "",
         memory: str = "512M", timeout: float = 240, until_ready: bool = False,
         extra_args: list[str] | None = None) -> Boot:
    """Boot under QEMU TCG with the console on the serial port and return what it printed.

    Waits for the guest to power off (the reference agent does when the command line has
    kata_ref_agent.poweroff); with until_ready=True it stops the VM as soon as READY shows.
    The QEMU process is always killed by PID before returning.
    """
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise RuntimeError("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
    cmdline = f"console=ttyS0 panic=-1 {append}".strip()
    machine = "pc,nvdimm=on" if nvdimm else "pc"
    mem = f"{memory},slots=2,maxmem=8G" if nvdimm else memory
    args = [qemu, "-accel", "tcg", "-machine", machine, "-cpu", "max", "-smp", "1", "-m", mem,
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-serial", "stdio", "-kernel", str(kernel.vmlinuz), "-append", cmdline]
    if initrd:
        args += ["-initrd", str(initrd)]
    if nvme:
        args += ["-drive", f"file={nvme},if=none,id=nvme0,format=raw,snapshot=on",
                 "-device", "nvme,serial=kataosb0,drive=nvme0"]
    if virtio:
        args += ["-drive", f"file={virtio},if=none,id=vd0,format=raw,snapshot=on",
                 "-device", "virtio-blk-pci,drive=vd0"]
    if nvdimm:
        size = os.path.getsize(nvdimm)
        args += ["-object", f"memory-backend-file,id=nvmem0,share=off,readonly=on,mem-path={nvdimm},size={size}",
                 "-device", "nvdimm,id=nv0,memdev=nvmem0,unarmed=on"]
    args += extra_args or []

    start = time.monotonic()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    chunks: list[bytes] = []
    ready_at: list[float] = []

    def reader() -> None:
        assert proc.stdout is not None
        buf = b""
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):
            chunks.append(chunk)
            buf += chunk
            if not ready_at and b"kata-ref-agent: READY" in buf:
                ready_at.append(time.monotonic())
            buf = buf[-256:]

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    timed_out = False
    try:
        deadline = start + timeout
        while proc.poll() is None:
            if until_ready and ready_at:
                time.sleep(0.2)  # let the rest of the line arrive
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        t.join(timeout=5)
    end = ready_at[0] if ready_at else time.monotonic()
    console = b"".join(chunks).decode("utf-8", "replace")
    return Boot(console=console, seconds=end - start, returncode=proc.returncode, timed_out=timed_out)

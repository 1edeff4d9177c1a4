"""kata-osbuilder-build: the make variables as options, progress on stderr, the JSON summary on stdout."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .core import build, default_project_dir

# option -> (extra var, kind) ; kinds: str, path, yesno, int
OPTIONS = {
    "distro": ("distro", str, "DISTRO"),
    "os-version": ("os_version", str, "OS_VERSION"),
    "arch": ("arch", str, "ARCH: one, or several comma-separated (built in parallel)"),
    "agent-init": ("agent_init", "yesno", "AGENT_INIT (yes|no)"),
    "build-method": ("build_method", str, "BUILD_METHOD (distro|dracut)"),
    "agent-source-bin": ("agent_source_bin", "path", "AGENT_SOURCE_BIN ({arch} in it: the build's architecture)"),
    "agent-tarball": ("agent_tarball", "path", "AGENT_TARBALL ({arch} as for --agent-source-bin)"),
    "agent-sha256": ("agent_sha256", str, "AGENT_SHA256"),
    "agent-version": ("agent_version", str, "AGENT_VERSION"),
    "extra-pkgs": ("extra_pkgs", str, "EXTRA_PKGS (space-separated)"),
    "rootfs-dir": ("rootfs_dir", "path", "ROOTFS_DIR"),
    "images-build-dest": ("images_build_dest", "path", "IMAGES_BUILD_DEST (default: <checkout>/build)"),
    "fs-type": ("fs_type", str, "FS_TYPE (ext4|erofs)"),
    "root-free-space": ("root_free_space", int, "ROOT_FREE_SPACE (MiB)"),
    "skip-dax-header": ("skip_dax_header", "yesno", "SKIP_DAX_HEADER"),
    "measured-rootfs": ("measured_rootfs", "yesno", "MEASURED_ROOTFS"),
    "initrd-compression": ("initrd_compression", str, "INITRD_COMPRESSION"),
    "kernel-modules-dir": ("kernel_modules_dir", "path", "KERNEL_MODULES_DIR"),
    "guest-hooks-tarball": ("guest_hooks_tarball", "path", "GUEST_HOOKS_TARBALL"),
    "agent-policy-file": ("agent_policy_file", "path", "AGENT_POLICY_FILE"),
    "use-qemu-user": ("use_qemu_user", str, "auto|true|false: foreign architectures on the local builder through qemu-user"),
}


def yesno(value: str) -> bool:
    v = value.strip().lower()
    if v in ("yes", "y", "true", "1", "on"):
        return True
    if v in ("no", "n", "false", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, not {value!r}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kata-osbuilder-build",
        description="Build a Kata guest rootfs, image or initrd with kata.osbuilder through ansible-runner. "
                    "Progress per phase goes to stderr, a JSON summary to stdout; the exit code is 0 "
                    "when every artifact was built and its sha256 checked, 1 when the build failed, 2 on bad usage.")
    p.add_argument("--target", choices=("image", "initrd", "rootfs"), default="image")
    p.add_argument("--inventory", "-i", help="inventory file or directory (default: inventories/local)")
    p.add_argument("--project-dir", help="the kata.osbuilder checkout (default: the one holding this package, or KATA_OSBUILDER_DIR)")
    for opt, (_, kind, text) in OPTIONS.items():
        typ = yesno if kind == "yesno" else int if kind is int else str
        p.add_argument(f"--{opt}", type=typ, help=text)
    p.add_argument("-e", "--extra-var", action="append", default=[], metavar="KEY=VALUE",
                   help="any other playbook variable (repeatable); VALUE is read as JSON when it parses")
    p.add_argument("--json", metavar="FILE", help="also write the summary to FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("-v", "--verbose", action="count", default=0, help="show plays and tasks (-vv.. passes verbosity to Ansible)")
    return p


def extravars_from(args: argparse.Namespace) -> dict:
    ev: dict = {}
    for opt, (var, kind, _) in OPTIONS.items():
        value = getattr(args, opt.replace("-", "_"))
        if value is None:
            continue
        if kind == "path":
            # {arch} in an agent path: one agent per architecture when several are built
            value = str(Path(value).resolve()).replace("{arch}", "{{ kata_build_arch }}")
        ev[var] = value
    for item in args.extra_var:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"kata-osbuilder-build: -e needs KEY=VALUE, not {item!r}")
        try:
            ev[key] = json.loads(raw)
        except ValueError:
            ev[key] = raw
    return ev


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        ev = extravars_from(args)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    if "images_build_dest" not in ev:
        project = Path(args.project_dir).resolve() if args.project_dir else default_project_dir()
        ev["images_build_dest"] = str(project / "build")
    try:
        summary = build(args.target, extravars=ev, inventory=args.inventory, project_dir=args.project_dir,
                        progress=None if args.quiet else sys.stderr, verbose=args.verbose > 0,
                        verbosity=max(0, args.verbose - 1))
    except (FileNotFoundError, ValueError) as e:
        print(f"kata-osbuilder-build: {e}", file=sys.stderr)
        return 2
    text = json.dumps(summary, indent=2, sort_keys=False)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    if not args.quiet:
        for f in summary["failures"]:
            print(f"FAILED {f['host']}: {f['task']}: {f['msg']}", file=sys.stderr)
        for a in summary["artifacts"]:
            print(f"{a['path']} {a['size']} bytes sha256 {a['sha256']}{'' if a['sha256_verified'] else ' MISMATCH'}",
                  file=sys.stderr)
        print(f"{summary['status']} in {summary['elapsed_seconds']:.1f}s", file=sys.stderr)
    return 0 if summary["status"] == "successful" else 1


if __name__ == "__main__":
    sys.exit(main())

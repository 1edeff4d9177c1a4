"""The same content works as an installed collection (ansible-galaxy collection build + install)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(args, cwd, env=None):
    r = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout


def test_built_and_installed_collection_works(tmp_path):
    run(["ansible-galaxy", "collection", "build", "--force", "--output-path", str(tmp_path)], REPO)
    tarball = next(tmp_path.glob("kata-osbuilder-*.tar.gz"))
    coll = tmp_path / "coll"
    run(["ansible-galaxy", "collection", "install", "--force", "-p", str(coll), str(tarball)], tmp_path)
    installed = coll / "ansible_collections/kata/osbuilder"
    assert (installed / "MANIFEST.json").is_file() and not (installed / ".collections").exists()

    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(coll), ANSIBLE_HOME=str(tmp_path / "home"))
    listing = run(["ansible-doc", "-l", "kata.osbuilder"], tmp_path, env)
    for module in ("cpio_archive", "gpt_image", "rootfs_finalize", "rootfs_info", "elf_info"):
        assert f"kata.osbuilder.{module}" in listing
    assert "kata.osbuilder.chroot" in run(["ansible-doc", "-t", "connection", "kata.osbuilder.chroot"], tmp_path, env)

    role_doc = run(["ansible-doc", "-t", "role", "kata.osbuilder.pack"], tmp_path, env)
    assert "pack_kind" in role_doc  # roles and their argument specs are installed

    # a module of the installed copy, run from outside the checkout
    tree = tmp_path / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/hello").write_text("hi\n")
    play = tmp_path / "play.yml"
    play.write_text(f"""
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - kata.osbuilder.cpio_archive:
        src: {tree}
        dest: {tmp_path}/out.cpio.gz
      register: packed
    - ansible.builtin.assert:
        that: packed.entries == 3
""")
    out = run(["ansible-playbook", "-i", "localhost,", "-e", f"ansible_python_interpreter={sys.executable}", str(play)],
              tmp_path, env)
    assert "failed=0" in out

# kata.osbuilder front end, with Kata osbuilder's variable names.
#   sudo make image DISTRO=debian AGENT_SOURCE_BIN=/path/kata-agent
#   sudo make initrd AGENT_INIT=yes AGENT_SOURCE_BIN=/path/kata-agent
SHELL := /bin/bash
.DEFAULT_GOAL := help
TOP := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))

PYTHON ?= python3
ANSIBLE_PLAYBOOK ?= ansible-playbook
PYTEST_ARGS ?=

# osbuilder's variables (empty: the collection's default, see playbooks/vars/defaults.yml)
DISTRO ?=
OS_VERSION ?=
ARCH ?=
AGENT_INIT ?=
BUILD_METHOD ?=
AGENT_SOURCE_BIN ?=
AGENT_TARBALL ?=
AGENT_SHA256 ?=
AGENT_VERSION ?=
EXTRA_PKGS ?=
ROOTFS_DIR ?=
IMAGES_BUILD_DEST ?= $(TOP)/build
FS_TYPE ?=
ROOT_FREE_SPACE ?=
SKIP_DAX_HEADER ?=
MEASURED_ROOTFS ?=
SELINUX ?=
MIN_FREE_SPACE_MB ?=
INITRD_COMPRESSION ?=
KERNEL_MODULES_DIR ?=
GUEST_HOOKS_TARBALL ?=
AGENT_POLICY_FILE ?=
DEBUG ?=
DRACUT_KVERSION ?=
DRACUT_OVERLAY_DIR ?=
DRACUT_KMODDIR ?=
DRACUT_DRIVERS ?=

yesno = $(if $(filter yes true 1 y,$(1)),true,$(if $(filter no false 0 n,$(1)),false,$(1)))
EXTRA_VARS = \
  $(if $(DISTRO),-e distro=$(DISTRO)) \
  $(if $(OS_VERSION),-e os_version=$(OS_VERSION)) \
  $(if $(ARCH),-e arch=$(ARCH)) \
  $(if $(AGENT_INIT),-e agent_init=$(call yesno,$(AGENT_INIT))) \
  $(if $(BUILD_METHOD),-e build_method=$(BUILD_METHOD)) \
  $(if $(AGENT_SOURCE_BIN),-e agent_source_bin=$(abspath $(AGENT_SOURCE_BIN))) \
  $(if $(AGENT_TARBALL),-e agent_tarball=$(abspath $(AGENT_TARBALL))) \
  $(if $(AGENT_SHA256),-e agent_sha256=$(AGENT_SHA256)) \
  $(if $(AGENT_VERSION),-e agent_version=$(AGENT_VERSION)) \
  $(if $(EXTRA_PKGS),-e "extra_pkgs='$(EXTRA_PKGS)'") \
  $(if $(ROOTFS_DIR),-e rootfs_dir=$(abspath $(ROOTFS_DIR))) \
  -e images_build_dest=$(abspath $(IMAGES_BUILD_DEST)) \
  $(if $(FS_TYPE),-e fs_type=$(FS_TYPE)) \
  $(if $(ROOT_FREE_SPACE),-e root_free_space=$(ROOT_FREE_SPACE)) \
  $(if $(SKIP_DAX_HEADER),-e skip_dax_header=$(call yesno,$(SKIP_DAX_HEADER))) \
  $(if $(MEASURED_ROOTFS),-e measured_rootfs=$(call yesno,$(MEASURED_ROOTFS))) \
  $(if $(SELINUX),-e selinux=$(call yesno,$(SELINUX))) \
  $(if $(MIN_FREE_SPACE_MB),-e min_free_space_mb=$(MIN_FREE_SPACE_MB)) \
  $(if $(INITRD_COMPRESSION),-e initrd_compression=$(INITRD_COMPRESSION)) \
  $(if $(KERNEL_MODULES_DIR),-e kernel_modules_dir=$(abspath $(KERNEL_MODULES_DIR))) \
  $(if $(GUEST_HOOKS_TARBALL),-e guest_hooks_tarball=$(abspath $(GUEST_HOOKS_TARBALL))) \
  $(if $(AGENT_POLICY_FILE),-e agent_policy_file=$(abspath $(AGENT_POLICY_FILE))) \
  $(if $(DRACUT_KVERSION),-e dracut_kversion=$(DRACUT_KVERSION)) \
  $(if $(DRACUT_OVERLAY_DIR),-e dracut_overlay_dir=$(abspath $(DRACUT_OVERLAY_DIR))) \
  $(if $(DRACUT_KMODDIR),-e dracut_kmoddir=$(abspath $(DRACUT_KMODDIR))) \
  $(if $(DRACUT_DRIVERS),-e "dracut_drivers='$(DRACUT_DRIVERS)'") \
  $(if $(filter yes true 1,$(DEBUG)),-vvv)

PLAY = cd $(TOP) && $(ANSIBLE_PLAYBOOK) $(EXTRA_VARS)

.PHONY: help rootfs image initrd list-distros clean clean-cache deps deps-apt deps-pip ref-agent demo test check lint bench collection
help:
	@echo "Targets: rootfs image initrd list-distros clean clean-cache | demo check test lint bench | deps ref-agent collection"
	@echo "Variables: DISTRO OS_VERSION ARCH AGENT_INIT BUILD_METHOD AGENT_SOURCE_BIN AGENT_TARBALL AGENT_SHA256"
	@echo "           EXTRA_PKGS ROOTFS_DIR IMAGES_BUILD_DEST FS_TYPE ROOT_FREE_SPACE SKIP_DAX_HEADER MEASURED_ROOTFS SELINUX"
	@echo "           INITRD_COMPRESSION KERNEL_MODULES_DIR GUEST_HOOKS_TARBALL AGENT_POLICY_FILE DEBUG"
	@echo "           BUILD_METHOD=dracut: DRACUT_KVERSION DRACUT_KMODDIR DRACUT_DRIVERS DRACUT_OVERLAY_DIR"

rootfs:
	$(PLAY) playbooks/rootfs.yml
image:
	$(PLAY) playbooks/image.yml
initrd:
	$(PLAY) playbooks/initrd.yml
rootfs-% image-% initrd-%:
	$(MAKE) $(firstword $(subst -, ,$@)) DISTRO=$*

list-distros:
	@cd $(TOP) && $(PYTHON) tools/list-distros.py

clean:
	rm -rf $(TOP)/build
	@echo "Work trees and the bootstrap cache are kept: make clean-cache; rm -rf /var/lib/kata-osbuilder"

# The bootstrap cache (bases keyed on their inputs): the next build bootstraps again.
CACHE_DIR ?= /var/cache/kata-osbuilder
clean-cache:
	rm -rf -- $(CACHE_DIR)/bootstrap

# Everything a fresh Debian machine needs, for building and for the tests.
APT_PACKAGES := python3 python3-pip python3-venv git make gcc musl-tools binutils file \
  mmdebstrap debootstrap qemu-system-x86 qemu-utils qemu-user-static gdisk parted fdisk \
  e2fsprogs erofs-utils xfsprogs dracut cryptsetup-bin libarchive-tools cpio zstd pigz xz-utils lz4 \
  busybox-static openssh-server iproute2 util-linux \
  binfmt-support arch-test gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu \
  rpm createrepo-c dnf zypper gnupg
deps: deps-apt deps-pip
deps-apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi
deps-pip:
	$(PYTHON) -m pip install -q -r $(TOP)/requirements-dev.txt

ref-agent:
	$(MAKE) -s -C $(TOP)/tools/ref-agent

# The main job: a Debian agent-as-init initrd with the reference agent, booted under QEMU.
demo: deps ref-agent
	$(MAKE) initrd AGENT_INIT=yes AGENT_SOURCE_BIN=$(TOP)/build/ref-agent/$(shell uname -m)/kata-ref-agent
	$(PYTHON) $(TOP)/tools/boot.py --initrd $(abspath $(IMAGES_BUILD_DEST))/kata-containers-initrd.img

# The whole test suite (unit, property, boot, end to end, molecule, lint).
check: deps
	$(MAKE) test

test:
	cd $(TOP) && $(PYTHON) -m pytest $(PYTEST_ARGS)

lint:
	cd $(TOP) && ansible-lint --profile production

bench: deps ref-agent
	cd $(TOP) && for b in bench/cpio.py bench/image.py bench/pipeline.py bench/dracut.py; do [ -f $$b ] && $(PYTHON) $$b || exit 1; done

collection:
	cd $(TOP) && ansible-galaxy collection build --force --output-path build/

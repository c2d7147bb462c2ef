#!/usr/bin/env bash
# Installs the Debian packages the driver and its test guests need, only those missing.
# Usage: bash scripts/setup.sh   (as root, or with sudo available)
set -euo pipefail

pkgs=(
  qemu-system-x86 qemu-utils # QEMU itself, qemu-img for overlays
  busybox-static cpio        # the tiny guest's userland and initramfs
  debootstrap e2fsprogs      # the systemd guest's root file system and disk image
  zstd xz-utils              # decompressing kernel modules
  vde2                       # virtual networks (vde_switch)
  bash dash                  # the protocol tests run against both shells
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  echo "setup: installing ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
command -v cargo >/dev/null || { echo "setup: cargo is missing: install Rust (https://rustup.rs)" >&2; exit 1; }

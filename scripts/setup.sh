#!/usr/bin/env bash
# Installs the Debian packages the driver and its test guests need (scripts/packages.txt), only those
# missing (with --all, every one: CI does not trust what a machine has; --updated: the caller has just
# run apt-get update).
# Usage: bash scripts/setup.sh [--all] [--updated]   (as root, or with sudo available)
set -euo pipefail

mapfile -t pkgs < <(grep -v '^#' "$(dirname "$0")/packages.txt")
missing=()
for p in "${pkgs[@]}"; do
  if [[ " $* " == *" --all "* ]] || ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  # Machines here come with qemu-utils from bookworm-backports (10.0) but no backports source, and
  # qemu-system-x86 7.2 "Breaks" it: take both QEMU packages from the release itself, the QEMU the
  # project is tested with, downgrading qemu-utils if need be.
  if ! dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q 'install ok installed'; then
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    for i in "${!missing[@]}"; do
      case ${missing[$i]} in qemu-utils | qemu-system-x86) unset "missing[$i]" ;; esac
    done
    missing+=("qemu-system-x86/$codename" "qemu-utils/$codename")
  fi
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  echo "setup: installing ${missing[*]}" >&2
  [[ " $* " == *" --updated "* ]] || "${sudo[@]}" apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends \
    --allow-downgrades "${missing[@]}" >&2
fi
command -v cargo >/dev/null || { echo "setup: cargo is missing: install Rust (https://rustup.rs)" >&2; exit 1; }

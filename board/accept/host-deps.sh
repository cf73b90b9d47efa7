#!/usr/bin/env bash
# Host prerequisites of the board acceptance test: the Debian packages it uses, and
# binfmt_misc with qemu-aarch64 registered so that mmdebstrap can run arm64
# maintainer scripts. Installs only what is missing. Needs root.
#
# usage: board/accept/host-deps.sh
set -euo pipefail

PACKAGES=(qemu-system-arm mmdebstrap qemu-user-static binfmt-support arch-test
    dosfstools mtools e2fsprogs)

die() {
    printf 'host-deps.sh: %s\n' "$*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and mounts binfmt_misc)"

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'install ok installed' >/dev/null; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
else
    echo "present: ${PACKAGES[*]}"
fi

binfmt=/proc/sys/fs/binfmt_misc
if ! mountpoint -q "$binfmt"; then
    mount -t binfmt_misc binfmt_misc "$binfmt"
fi
if [ ! -e "$binfmt/qemu-aarch64" ]; then
    update-binfmts --enable qemu-aarch64 || true
fi
arch-test arm64 >/dev/null 2>&1 ||
    die "arch-test arm64 fails: arm64 programs cannot run here (binfmt_misc / qemu-user-static)"
echo "arm64 binaries run (binfmt_misc, qemu-user-static)"

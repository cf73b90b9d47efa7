#!/usr/bin/env bash
# The emulated board's base system: a minimal arm64 Debian with systemd, udev and a
# kernel, built once with mmdebstrap and then reused from a cache directory whose
# name is a hash of everything that goes into it (this script, the initramfs
# files, suite, mirror, package list). Nothing of rvm-backup is in it; image.sh
# adds that per boot scenario.
#
# usage: board/accept/rootfs.sh            prints the cache entry's directory, holding
#                                          rootfs.tar, vmlinuz, initrd.img
# env:   RVM_ACCEPT_CACHE   cache root (default /var/cache/rvm-board-accept)
#        RVM_ACCEPT_MIRROR  Debian archive (default http://deb.debian.org/debian)
#        RVM_ACCEPT_SUITE   Debian suite (default bookworm)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

CACHE=${RVM_ACCEPT_CACHE:-/var/cache/rvm-board-accept}
MIRROR=${RVM_ACCEPT_MIRROR:-http://deb.debian.org/debian}
SUITE=${RVM_ACCEPT_SUITE:-bookworm}
INCLUDE=systemd-sysv,udev,kmod,mount,dosfstools,sqlite3,linux-image-arm64,initramfs-tools

die() {
    printf 'rootfs.sh: %s\n' "$*" >&2
    exit 1
}
log() { printf '%s\n' "$*" >&2; }

# The recipe. The initramfs configuration goes in before the kernel and
# initramfs-tools are installed, so the one initramfs build already uses it. The
# customize hooks run after everything is installed: name the board, allow a root
# login on the console without a password (an emulated test board), copy the
# kernel and initramfs out. $INITRAMFS is board/accept/initramfs, $OUT the entry
# being built (both exported to the hooks).
args=(--mode=root --arch=arm64 --variant=minbase
    --include="$INCLUDE"
    --aptopt='Acquire::Check-Valid-Until "false"'
    --essential-hook='d="$1/etc/initramfs-tools"; mkdir -p "$d/hooks" "$d/conf.d" &&
        install -m 0755 "$INITRAMFS/rvm-accept-modules.hook" "$d/hooks/rvm-accept-modules" &&
        install -m 0644 "$INITRAMFS/rvm-accept.conf" "$d/conf.d/rvm-accept.conf"'
    --customize-hook='echo rvm-board >"$1/etc/hostname"; printf "127.0.0.1 localhost\n127.0.1.1 rvm-board\n" >"$1/etc/hosts"'
    --customize-hook='chroot "$1" passwd -d root'
    --customize-hook='cp -L "$1/vmlinuz" "$OUT/vmlinuz"; cp -L "$1/initrd.img" "$OUT/initrd.img"'
)

# The cache key: the recipe (not this file's comments) and the files it copies in.
key=$(
    {
        printf 'suite=%s\nmirror=%s\n' "$SUITE" "$MIRROR"
        printf '%s\n' "${args[@]}"
        cat "$here"/initramfs/*
    } | sha256sum | cut -c1-16
)
entry="$CACHE/rootfs-$key"

mkdir -p "$CACHE"
# One builder at a time; a second run waits, then finds the entry done.
exec 9>"$CACHE/.lock"
flock 9

if [ -f "$entry/done" ]; then
    log "base rootfs: cached ($entry)"
    printf '%s\n' "$entry"
    exit 0
fi

"$here/host-deps.sh" >&2

rm -rf "$entry.tmp"
mkdir -p "$entry.tmp"
log "base rootfs: building with mmdebstrap ($SUITE arm64, $MIRROR) into $entry"
t0=$SECONDS
INITRAMFS="$here/initramfs" OUT="$entry.tmp" nice -n 10 mmdebstrap "${args[@]}" "$SUITE" "$entry.tmp/rootfs.tar" "$MIRROR" >&2
[ -s "$entry.tmp/vmlinuz" ] && [ -s "$entry.tmp/initrd.img" ] || die "no kernel or initramfs in the built system"
printf 'built in %ds\n' $((SECONDS - t0)) >"$entry.tmp/done"
rm -rf "$entry"
mv "$entry.tmp" "$entry"
log "base rootfs: $(cat "$entry/done")"
printf '%s\n' "$entry"

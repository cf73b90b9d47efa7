#!/usr/bin/env bash
# Make one disk image of the emulated board from the cached base system.
#
# usage: board/accept/image.sh KIND BASE OUT.img [BINARY RECOVERY_PUB]
#   KIND     smoke    the base system and the test harness only
#            fresh    a freshly imaged standard card: rvm-backup installed with the
#                     project's board/install.sh and the development profile plus the
#                     site settings below, the fleet's recovery public key, the
#                     platform stand-in's code; no master key, no database, no site data
#            healthy  fresh, plus what a board gathers in service: its own master key,
#                     its site configuration, application data and older logs
#   BASE     the cache entry from rootfs.sh (rootfs.tar)
#   BINARY   the aarch64 rvm-backup (fresh, healthy)
#   RECOVERY_PUB  the line `recovery_public_key = "..."` that keygen --recovery printed
# Needs root (the image keeps owners and device nodes), binfmt for arm64 (keygen).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
board=$(cd "$here/.." && pwd)

die() {
    printf 'image.sh: %s\n' "$*" >&2
    exit 1
}

[ $# -ge 3 ] || die "usage: image.sh KIND BASE OUT.img [BINARY RECOVERY_PUB]"
kind=$1 base=$2 out=$3
binary=${4:-} recovery_pub=${5:-}
case $kind in
    smoke) ;;
    fresh | healthy)
        [ -f "$binary" ] || die "$kind needs the aarch64 binary"
        [ -n "$recovery_pub" ] || die "$kind needs the recovery_public_key line"
        ;;
    *) die "unknown kind '$kind' (smoke, fresh, healthy)" ;;
esac
[ -f "$base/rootfs.tar" ] || die "no $base/rootfs.tar (run rootfs.sh)"

root=$(mktemp -d "${TMPDIR:-/var/tmp}/rvm-accept-root.XXXXXX")
trap 'rm -rf "$root"' EXIT
tar -xpf "$base/rootfs.tar" -C "$root" --numeric-owner

# The harness (test-only): runs this boot's checks once multi-user is reached.
install -D -m 0755 "$here/guest/harness" "$root/usr/local/lib/rvm-accept/harness"
install -m 0644 "$here/guest/rvm-accept.service" "$root/etc/systemd/system/"
enable=(rvm-accept.service)

if [ "$kind" != smoke ]; then
    # rvm-backup exactly as a board gets it.
    "$board/install.sh" --root "$root" --binary "$binary" --profile development >/dev/null

    # The site settings of the test board: backups and exports every minute, no jitter, a boot
    # waits at most 30 s for a recovery stick, the fleet's recovery public key, the
    # platform's group as a reader on the socket.
    cfg="$root/etc/rvm-backup/rvm-backup.toml"
    sed -i -e 's/^backup_interval = .*/backup_interval = "1m"/' \
        -e 's/^recovery_timeout = .*/recovery_timeout = "30s"/' "$cfg"
    grep -q '^backup_interval = "1m"$' "$cfg" || die "the profile has no backup_interval line to change"
    grep -q '^recovery_timeout = "30s"$' "$cfg" || die "the profile has no recovery_timeout line to change"
    awk -v pub="$recovery_pub" '!done && /^\[/ { print "backup_jitter = \"1s\""; print "export_interval = \"1m\""; print pub; print ""; done = 1 } { print }' \
        "$cfg" >"$cfg.new"
    mv "$cfg.new" "$cfg"
    chmod 0640 "$cfg"
    printf '\n[access.reader]\ngroups = ["myrvm"]\n' >>"$cfg"

    # The platform stand-in: its user, its code, its empty data directories.
    useradd --prefix "$root" --system --user-group --home-dir /var/lib/myrvm --shell /usr/sbin/nologin myrvm
    install -D -m 0755 "$here/guest/platform" "$root/opt/myrvm/bin/platform"
    install -m 0644 "$here/guest/myrvm.service" "$root/etc/systemd/system/"
    install -d -m 0755 "$root/etc/myrvm"
    printf 'site=unprovisioned\n' >"$root/etc/myrvm/site.conf"
    uidgid=$(awk -F: '$1 == "myrvm" { print $3 ":" $4 }' "$root/etc/passwd")
    install -d -m 0750 -o "${uidgid%:*}" -g "${uidgid#*:}" "$root/var/lib/myrvm" "$root/var/log/myrvm"
    enable+=(rvm-backup.service rvm-backup-recovery.service myrvm.service)
fi

if [ "$kind" = healthy ]; then
    # The board's own master key, made on the board (arm64 under binfmt).
    chroot "$root" /usr/local/bin/rvm-backup keygen --out /etc/rvm-backup/master.key >/dev/null
    # What a board in service has gathered: its site config, application data, old logs.
    printf 'site=%s\nlane=3\n' "$(basename "$out" .img)-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')" \
        >"$root/etc/myrvm/site.conf"
    install -d -m 0755 "$root/opt/myrvm/data"
    head -c 32M /dev/urandom >"$root/opt/myrvm/data/model.bin"
    printf 'price=0.25\n' >"$root/opt/myrvm/data/tariff.txt"
    printf 'old log line\n' >"$root/var/log/myrvm/platform.log.1"
    chown -R "$uidgid" "$root/var/log/myrvm"
fi

systemctl --root="$root" enable "${enable[@]}" >/dev/null 2>&1 ||
    die "systemctl --root enable ${enable[*]} failed"

rm -f "$out"
truncate -s 2G "$out"
mkfs.ext4 -q -F -L rvmroot -d "$root" "$out"

#!/usr/bin/env bash
# Install rvm-backup on a board: the binary, a config profile, a master key, the systemd
# units and the udev rule. Safe to run again: an existing config or key is never replaced.
#
# usage: board/install.sh [--profile development|staging|production] [--binary PATH]
#                         [--platform-unit NAME] [--root DIR] [--dry-run]
#   --profile NAME        config profile from board/profiles/ (default: production)
#   --binary PATH         the aarch64 rvm-backup binary (default: target/board/rvm-backup as
#                         built by cross/build-release.sh, else ./rvm-backup next to this script)
#   --platform-unit NAME  the platform's systemd unit, which must start only after a disaster
#                         restore at boot (default: myrvm.service)
#   --root DIR            install into the board root filesystem at DIR (an SD card image
#                         being prepared) instead of this machine: no master key is made
#                         (each board makes its own), nothing is reloaded
#   --dry-run             print what would be done, change nothing
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

BIN_DEST=/usr/local/bin/rvm-backup
ETC=/etc/rvm-backup
CONFIG="$ETC/rvm-backup.toml"
KEY="$ETC/master.key"
STATE=/var/lib/rvm-backup
UNIT_DIR=/etc/systemd/system
RULES_DIR=/etc/udev/rules.d
RECOVERY_MOUNT=/media/rvm-recovery
UNITS=(
    rvm-backup.service
    rvm-backup-backup.service
    rvm-backup-backup.timer
    rvm-backup-recovery.service
    rvm-backup-export.service
)
# The unit that rvm-backup-recovery.service names as the platform's (Before=).
PLATFORM_PLACEHOLDER=myrvm.service
RULES=99-rvm-backup-usb.rules
# Installed by earlier versions; removed when they are still ours (see below).
OLD_RESTORE_UNIT=rvm-backup-usb-restore.service
OLD_MOUNT_UNIT='media-rvm\x2drecovery.mount'

usage() {
    sed -n '/^# usage:/,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit "${1:-0}"
}
die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit 1
}

profile=production
binary=""
platform_unit=$PLATFORM_PLACEHOLDER
dry_run=0
root=""
while [ $# -gt 0 ]; do
    case $1 in
        --profile)
            [ $# -ge 2 ] || die "--profile needs a name"
            profile=$2
            shift 2
            ;;
        --profile=*)
            profile=${1#*=}
            shift
            ;;
        --binary)
            [ $# -ge 2 ] || die "--binary needs a path"
            binary=$2
            shift 2
            ;;
        --binary=*)
            binary=${1#*=}
            shift
            ;;
        --platform-unit)
            [ $# -ge 2 ] || die "--platform-unit needs a unit name"
            platform_unit=$2
            shift 2
            ;;
        --platform-unit=*)
            platform_unit=${1#*=}
            shift
            ;;
        --root)
            [ $# -ge 2 ] || die "--root needs a directory"
            root=$2
            shift 2
            ;;
        --root=*)
            root=${1#*=}
            shift
            ;;
        --dry-run)
            dry_run=1
            shift
            ;;
        -h | --help) usage 0 ;;
        *)
            printf 'install.sh: unknown argument: %s\n' "$1" >&2
            usage 2
            ;;
    esac
done

profile_file="$here/profiles/$profile.toml"
if [ ! -f "$profile_file" ]; then
    known=$(cd "$here/profiles" && for f in *.toml; do printf '%s ' "${f%.toml}"; done)
    die "no profile '$profile' (have: ${known% })"
fi

if [ -z "$binary" ]; then
    for candidate in "$here/../target/board/rvm-backup" "$here/rvm-backup"; do
        if [ -f "$candidate" ]; then
            binary=$candidate
            break
        fi
    done
    [ -n "$binary" ] || die "no binary found; pass --binary PATH"
fi
[ -f "$binary" ] || die "binary not found: $binary"
# A unit name only: it is put into a unit file, so nothing that could change its meaning.
[[ $platform_unit =~ ^[A-Za-z0-9:_.@-]+\.(service|target)$ ]] ||
    die "--platform-unit must be a unit name like myrvm.service, not: $platform_unit"
for f in "${UNITS[@]}" "$RULES"; do
    [ -f "$here/$f" ] || die "missing $here/$f"
done

if [ -n "$root" ]; then
    [ -d "$root/etc" ] || die "--root $root: not a root filesystem (no $root/etc)"
    root=$(cd "$root" && pwd)
    [ "$root" != / ] || root=""
fi

if [ "$dry_run" = 0 ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (or use --dry-run)"
fi

# run CMD...: do it, or with --dry-run only show it.
run() {
    if [ "$dry_run" = 1 ]; then
        printf 'would run:'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}
note() { printf '%s\n' "$*"; }

[ "$dry_run" = 1 ] && note "dry run: nothing is changed"
note "profile: $profile ($profile_file)"
note "binary:  $binary"
note "platform unit (starts after a disaster restore): $platform_unit"
[ -n "$root" ] && note "root:    $root"

# Binary: a temporary name, then an atomic rename, so a running daemon keeps its file.
run install -D -m 0755 "$binary" "$root$BIN_DEST.new"
run mv -f "$root$BIN_DEST.new" "$root$BIN_DEST"

# Config directory: root and the root group only (it holds the master key).
# Platform services that talk to the daemon join this group: the control
# socket is root:rvm-backup 0660 in a 0750 directory (see rvm-backup.service).
if [ -n "$root" ]; then
    # The image's own group file, not this machine's (--prefix: no chroot, no NSS).
    if ! grep -q '^rvm-backup:' "$root/etc/group"; then
        run groupadd --prefix "$root" --system rvm-backup
    fi
elif ! getent group rvm-backup >/dev/null 2>&1; then
    run groupadd --system rvm-backup
fi
run install -d -m 0750 "$root$ETC"
if [ -e "$root$CONFIG" ]; then
    note "keeping existing $root$CONFIG"
else
    run install -m 0640 "$profile_file" "$root$CONFIG"
fi

if [ -n "$root" ]; then
    note "no master key in an image: each board makes its own ($BIN_DEST keygen --out $KEY)"
elif [ -e "$KEY" ]; then
    note "keeping existing $KEY"
else
    # keygen writes the key with mode 0600 and prints its key id.
    run "$BIN_DEST" --config "$CONFIG" keygen --out "$KEY"
fi

run install -d -m 0750 "$root$STATE"
# The recovery stick's mount point (export_dir); systemd-mount would create it too.
run install -d -m 0755 "$root$RECOVERY_MOUNT"

# Units of earlier versions. A static mount unit for /media/rvm-recovery would stop
# systemd-mount from mounting the stick there (same unit name), and the old restore unit
# ran the restore only with a marker file. Each is removed only if it is still the file
# this script installed (it names RVMBACKUP or runs rvm-backup disaster-restore).
old_unit="$root$UNIT_DIR/$OLD_RESTORE_UNIT"
if [ -f "$old_unit" ] && grep -q 'rvm-backup disaster-restore' "$old_unit"; then
    if command -v systemctl >/dev/null 2>&1; then
        run systemctl ${root:+--root="$root"} disable "$OLD_RESTORE_UNIT"
    fi
    run rm -f "$old_unit"
    note "replaced $OLD_RESTORE_UNIT by rvm-backup-recovery.service: enable that one"
fi
old_unit="$root$UNIT_DIR/$OLD_MOUNT_UNIT"
if [ -f "$old_unit" ] && grep -q 'RVMBACKUP' "$old_unit"; then
    run rm -f "$old_unit"
fi

run install -d -m 0755 "$root$UNIT_DIR" "$root$RULES_DIR"
for unit in "${UNITS[@]}"; do
    if [ "$unit" = rvm-backup-recovery.service ]; then
        # The platform's unit in place of the placeholder on the Before= and RequiredBy=
        # lines, through a temporary file. The name was checked above: no character sed
        # would act on.
        tmp_unit=$(mktemp)
        trap 'rm -f "$tmp_unit"' EXIT
        sed -E "/^(Before|RequiredBy)=/ s/\<myrvm\.service\>/$platform_unit/" "$here/$unit" >"$tmp_unit"
        for key in Before RequiredBy; do
            grep -qE "^$key=(.* )?${platform_unit//./\\.}( |$)" "$tmp_unit" ||
                die "could not name $platform_unit on the $key= line of $unit"
        done
        run install -m 0644 "$tmp_unit" "$root$UNIT_DIR/$unit"
    else
        run install -m 0644 "$here/$unit" "$root$UNIT_DIR/$unit"
    fi
done
run install -m 0644 "$here/$RULES" "$root$RULES_DIR/$RULES"

if [ -n "$root" ]; then
    : # not this machine's udev or systemd
elif command -v udevadm >/dev/null 2>&1 && [ -d /run/udev ]; then
    run udevadm control --reload
fi
# Only when systemd is running (not, say, in a chroot building an SD card image).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    run systemctl daemon-reload
fi

if [ "$dry_run" = 1 ]; then
    done_msg="Dry run finished; nothing was changed."
else
    done_msg="Installed."
fi
if [ -n "$root" ]; then
    cat <<EOF

$done_msg Enable units in the image with: systemctl --root=$root enable UNIT
(rvm-backup.service for the daemon, or rvm-backup-backup.timer; rvm-backup-recovery.service).
EOF
    exit 0
fi
cat <<EOF

$done_msg Next, pick how backups run on this board:
  with the daemon:     systemctl enable --now rvm-backup.service
  without the daemon:  systemctl enable --now rvm-backup-backup.timer
USB disaster recovery at boot (before $platform_unit starts):
  systemctl enable rvm-backup-recovery.service
A stick labelled RVMBACKUP is mounted at $RECOVERY_MOUNT when plugged in, and the daemon
is asked to export onto it (rvm-backup-export.service); nothing to enable for that.
Keep a copy of $KEY somewhere safe off the board: without it no backup can be read.
EOF

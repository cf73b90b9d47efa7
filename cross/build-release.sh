#!/usr/bin/env bash
# Build the board binary: the board profile, aarch64, stripped, copied to target/board/rvm-backup,
# then smoke-tested under qemu-user with `rvm-backup demo` (backup, verify, restore, compare).
#
# usage: cross/build-release.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu
OUT_DIR="$repo/target/board"
OUT="$OUT_DIR/rvm-backup"
EM_AARCH64=183 # ELF e_machine of aarch64

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# The board profile (Cargo.toml): opt-level z, fat LTO, one codegen unit, panic=abort.
# With panic=abort nothing in this program ever unwinds, so its unwind tables
# (.eh_frame and its lookup table, ~400 KiB) are dead weight: the linker
# leaves them out (cross/no-unwind-tables.ld). A panic still prints its
# message and aborts; only a backtrace (RUST_BACKTRACE) would come out empty.
# Only this build: the test builds unwind (the harness catches panics), which
# is why this is set here and not in .cargo/config.toml.
export RUSTFLAGS="-C link-arg=-Wl,--no-eh-frame-hdr -C link-arg=-Wl,-T,$repo/cross/no-unwind-tables.ld"
echo "+ RUSTFLAGS='$RUSTFLAGS' cargo build --profile board --target $TARGET"
cargo build --profile board --target "$TARGET"

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in
    /*) ;;
    *) target_dir="$repo/$target_dir" ;;
esac
built="$target_dir/$TARGET/board/rvm-backup"
[ -f "$built" ] || die "cargo did not produce $built"

# Work on a copy so cargo's own output stays as cargo left it.
mkdir -p "$OUT_DIR"
cp "$built" "$OUT.tmp"
if command -v aarch64-linux-gnu-strip >/dev/null 2>&1; then
    aarch64-linux-gnu-strip "$OUT.tmp"
else
    echo "note: aarch64-linux-gnu-strip not found; relying on the board profile's strip = true"
fi
chmod 0755 "$OUT.tmp"
mv -f "$OUT.tmp" "$OUT"

# Refuse anything that is not a 64-bit little-endian aarch64 ELF.
magic=$(head -c 4 "$OUT" | od -An -c | tr -d ' ')
class_data=$(od -An -t u1 -j 4 -N 2 "$OUT" | tr -s ' ' | sed 's/^ //')
machine=$(od -An -t u1 -j 18 -N 2 "$OUT" | awk '{print $1 + 256 * $2}')
[ "$magic" = '177ELF' ] && [ "$class_data" = '2 1' ] && [ "$machine" = "$EM_AARCH64" ] ||
    die "$OUT is not an aarch64 ELF executable (magic=$magic class/data=$class_data machine=$machine)"

size=$(stat -c %s "$OUT")
printf 'board binary: %s\n' "$OUT"
printf 'size: %d bytes\n' "$size"

# Smoke test: the real board binary, emulated, end to end.
if [ "$(uname -m)" = aarch64 ]; then
    run=()
else
    command -v qemu-aarch64 >/dev/null 2>&1 || die "qemu-aarch64 missing: apt-get install qemu-user"
    run=(qemu-aarch64 -L "$SYSROOT")
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rvm-backup-smoke.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "+ ${run[*]} $OUT --quiet demo --dir $tmp/demo"
t0=$SECONDS
if ! "${run[@]}" "$OUT" --quiet demo --dir "$tmp/demo"; then
    die "smoke test failed: rvm-backup demo under ${run[*]:-native}"
fi
echo "smoke test passed ($((SECONDS - t0))s)"

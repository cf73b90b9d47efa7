#!/usr/bin/env bash
# Run the whole test suite as aarch64 code under qemu-user.
#
# usage: cross/test-aarch64.sh [extra cargo test arguments, e.g. a test name filter]
#
# Cargo builds the tests for aarch64-unknown-linux-gnu, links them with
# aarch64-linux-gnu-gcc and starts each test binary through the runner set in
# .cargo/config.toml: `qemu-aarch64 -L /usr/aarch64-linux-gnu`. See cross/README.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu
RUNNER="qemu-aarch64 -L $SYSROOT"

die() {
    printf 'error: %s (see cross/README.md)\n' "$*" >&2
    exit 1
}

command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || die "aarch64-linux-gnu-gcc missing: apt-get install gcc-aarch64-linux-gnu"
[ -e "$SYSROOT/lib/ld-linux-aarch64.so.1" ] || die "$SYSROOT has no aarch64 libc: apt-get install libc6-dev-arm64-cross"
command -v qemu-aarch64 >/dev/null 2>&1 || die "qemu-aarch64 missing: apt-get install qemu-user"
if command -v rustup >/dev/null 2>&1; then
    rustup target list --installed | grep -x "$TARGET" >/dev/null || die "rust target missing: rustup target add $TARGET"
fi

# qemu-user only emulates the process it was started with: when a test spawns the
# aarch64 rvm-backup binary itself (CARGO_BIN_EXE_rvm-backup), the host kernel has to
# run it, which needs a binfmt_misc entry for aarch64. Containers usually have none,
# so tests that spawn the binary should prefix it with this runner when it is set.
export RVM_BACKUP_TEST_RUNNER="${RVM_BACKUP_TEST_RUNNER:-$RUNNER}"
if [ -r /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64; then
    echo "binfmt_misc: qemu-aarch64 registered"
else
    echo "binfmt_misc: no qemu-aarch64 entry; spawned binaries go through RVM_BACKUP_TEST_RUNNER=\"$RVM_BACKUP_TEST_RUNNER\""
fi

# With cargo-nextest (on the CI machines, or `cargo install --locked cargo-nextest`),
# each test runs in its own emulated process under the `qemu` profile of
# .config/nextest.toml: a hung test is killed after 10 minutes and tried again
# (reported as FLAKY when a retry passes). Without it, plain cargo test.
if cargo nextest --version >/dev/null 2>&1; then
    echo "+ cargo nextest run --profile qemu --release --target $TARGET $*"
    exec cargo nextest run --profile qemu --release --target "$TARGET" "$@"
fi
echo "cargo-nextest not found: running plain cargo test (no per-test timeout or retry)" >&2
echo "+ cargo test --release --target $TARGET $*"
exec cargo test --release --target "$TARGET" "$@"

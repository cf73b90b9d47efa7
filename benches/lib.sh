# Shared by the benches/*.sh scripts (sourced, not run): error exit, section
# headings, the free-space check and the binary to measure.
#
# Needs: $repo (the checkout) set by the caller.

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

section() { printf '\n== %s\n' "$*"; }

# need_free_mib DIR MIB: fail unless DIR's file system has MIB MiB free.
need_free_mib() {
    local avail
    avail=$(df -Pm "$1" | awk 'NR == 2 { print $4 }')
    [ "$avail" -ge "$2" ] || die "need about $2 MiB free in $1, have $avail MiB"
}

# bench_binary: set $bin to $RVM_BACKUP_BIN, or build the release binary and use it.
bench_binary() {
    if [ -n "${RVM_BACKUP_BIN:-}" ]; then
        bin=$RVM_BACKUP_BIN
    else
        section "cargo build --release"
        (cd "$repo" && cargo build --release)
        local target_dir=${CARGO_TARGET_DIR:-target}
        [[ $target_dir == /* ]] || target_dir="$repo/$target_dir"
        bin="$target_dir/release/rvm-backup"
    fi
    [ -x "$bin" ] || die "no executable at $bin"
}

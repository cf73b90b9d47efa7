#!/usr/bin/env bash
# Boot the emulated board once: qemu-system-aarch64 (-M virt, 2 CPUs, 1 GiB) with the
# disk image as its SD card and, optionally, a stick image on an xHCI USB port. The
# serial console goes to LOG. Always bounded by `timeout`.
#
# usage: board/accept/qemu-boot.sh BASE DISK.img LOG SECONDS [STICK.img|-] [KERNEL ARGS...]
#   BASE     the cache entry from rootfs.sh (vmlinuz, initrd.img)
# exit status: qemu's (0 after the guest powered off), 124 when SECONDS ran out.
set -euo pipefail

[ $# -ge 4 ] || {
    echo "usage: qemu-boot.sh BASE DISK.img LOG SECONDS [STICK.img|-] [KERNEL ARGS...]" >&2
    exit 2
}
base=$1 disk=$2 log=$3 secs=$4
stick=${5:--}
shift $(($# < 5 ? $# : 5))

usb=()
if [ "$stick" != - ]; then
    usb=(-device qemu-xhci -drive "if=none,id=stick,file=$stick,format=raw" -device usb-storage,drive=stick)
fi

# -no-reboot: a guest power-off or reboot (or a panic, with panic=-1) ends qemu.
exec timeout --kill-after=10 "$secs" qemu-system-aarch64 \
    -M virt -cpu cortex-a53 -m 1024 -smp 2 -nographic -no-reboot -nic none \
    -kernel "$base/vmlinuz" -initrd "$base/initrd.img" \
    -append "root=/dev/vda rw console=ttyAMA0 panic=-1 $*" \
    -drive "file=$disk,if=virtio,format=raw" \
    "${usb[@]}" </dev/null >"$log" 2>&1

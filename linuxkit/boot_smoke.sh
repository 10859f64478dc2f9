#!/usr/bin/env bash
# Boots the image that linuxkit/build.sh made, twice on the same fresh data disk, under QEMU:
#   boot 1  waits for the marker "fun-init: containerd ready after X s", expects
#           "fun-init: data disk: formatted new", then powers the VM off through QMP
#           system_powerdown (the ACPI power button) and expects QEMU to exit 0 in time,
#           after "fun-init: data disk unmounted"
#   boot 2  same, but expects "fun-init: data disk: existing ext4" (not reformatted)
# Prints the wall time from QEMU's start to the marker and the guest uptime at the marker.
# Any failure exits non-zero with the console's tail. Every wait has a timeout.
#
#   linuxkit/boot_smoke.sh [--out DIR] [--machine q35|microvm] [--kernel pvh|bzimage]
#                          [--firmware qboot|seabios] [--cpu MODEL] [--append "EXTRA ARGS"]
#                          [--timeout SECONDS] [--boots N] [--keep]
#
# --kernel pvh (the default when <out>/fun-kernel.pvh exists) boots the uncompressed kernel
# through its PVH entry; bzimage boots fun-kernel as LinuxKit would. --firmware qboot uses
# QEMU's minimal qboot.rom instead of SeaBIOS (measured: no gain once virtio-net-pci has
# romfile=, so SeaBIOS, QEMU's default, stays the default).
# --machine microvm is for experiments: under TCG on a busy host its kernel often cannot
# calibrate the TSC (no PIT/HPET reference) and hangs before the console; q35 is reliable.
# Needs: qemu-system-x86_64, qemu-img, socat. Always TCG: /dev/kvm on the dev machines is PVM.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
out="$repo/build/linuxkit"
machine=q35
kernel=""
cpu=""
firmware=""
extra=""
timeout=180
boots=2
keep=0

die() { echo "boot_smoke: FAIL: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
    --machine) [ $# -ge 2 ] || die "--machine needs q35 or microvm"; machine=$2; shift 2 ;;
    --kernel) [ $# -ge 2 ] || die "--kernel needs pvh or bzimage"; kernel=$2; shift 2 ;;
    --cpu) [ $# -ge 2 ] || die "--cpu needs a model"; cpu=$2; shift 2 ;;
    --firmware) [ $# -ge 2 ] || die "--firmware needs qboot or seabios"; firmware=$2; shift 2 ;;
    --append) [ $# -ge 2 ] || die "--append needs arguments"; extra=$2; shift 2 ;;
    --timeout) [ $# -ge 2 ] || die "--timeout needs seconds"; timeout=$2; shift 2 ;;
    --boots) [ $# -ge 2 ] || die "--boots needs a number"; boots=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$machine" in q35|microvm) ;; *) die "--machine must be q35 or microvm" ;; esac
[[ "$timeout" =~ ^[0-9]+$ ]] || die "--timeout must be whole seconds"
[[ "$boots" =~ ^[1-9][0-9]*$ ]] || die "--boots must be a positive number"
for tool in qemu-system-x86_64 qemu-img socat; do
  command -v "$tool" >/dev/null || die "'$tool' not found (run ci/setup.sh)"
done
for f in fun-initrd.img fun-cmdline; do
  [ -f "$out/$f" ] || die "$out/$f missing: run linuxkit/build.sh first"
done
if [ -z "$kernel" ]; then
  if [ -f "$out/fun-kernel.pvh" ]; then kernel=pvh; else kernel=bzimage; fi
fi
case "$kernel" in
  pvh) kfile="$out/fun-kernel.pvh" ;;
  bzimage) kfile="$out/fun-kernel" ;;
  *) die "--kernel must be pvh or bzimage" ;;
esac
[ -f "$kfile" ] || die "$kfile missing: run linuxkit/build.sh first"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fun-boot-smoke.XXXXXX")
qemu_pid=""
cleanup() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null || true
    sleep 0.5
    kill -9 "$qemu_pid" 2>/dev/null || true
  fi
  if [ $keep = 1 ]; then echo "boot_smoke: kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
qemu-img create -q -f qcow2 "$tmp/data.qcow2" 4G || die "qemu-img create failed"
# fun-guestd (in images built with --guestd) reads its token from fw_cfg and exits without it.
head -c 32 /dev/urandom > "$tmp/secret"

# shellcheck disable=SC2054  # commas belong to QEMU's option syntax
if [ "$machine" = q35 ]; then
  devs=(-machine q35
        -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile=
        -drive file="$tmp/data.qcow2",if=none,id=d0,format=qcow2,cache=unsafe -device virtio-blk-pci,drive=d0,serial=fun-data
        -device virtio-rng-pci -fw_cfg name=opt/fun/secret,file="$tmp/secret")
else
  devs=(-machine microvm,rtc=on
        -netdev user,id=n0 -device virtio-net-device,netdev=n0
        -drive file="$tmp/data.qcow2",if=none,id=d0,format=qcow2,cache=unsafe -device virtio-blk-device,drive=d0,serial=fun-data
        -device virtio-rng-device -fw_cfg name=opt/fun/secret,file="$tmp/secret")
fi
# The image's read-only system disk, when its command line names one (linuxkit/build.sh).
serial=$(tr ' ' '\n' < "$out/fun-cmdline" | sed -n 's/^fun\.system=//p' | tail -1)
if [ -n "$serial" ]; then
  [ -f "$out/fun-system.img" ] || die "$out/fun-system.img missing (fun-cmdline names fun.system=$serial): run linuxkit/build.sh"
  if [ "$machine" = q35 ]; then blk=virtio-blk-pci; else blk=virtio-blk-device; fi
  devs+=(-drive file="$out/fun-system.img",if=none,id=sys,format=raw,readonly=on
         -device "$blk,drive=sys,serial=$serial")
fi
[ -z "$cpu" ] || devs+=(-cpu "$cpu")
qboot=""
for d in /usr/share/qemu /usr/share/qemu-efi /opt/homebrew/share/qemu /usr/local/share/qemu; do
  [ -f "$d/qboot.rom" ] && { qboot="$d/qboot.rom"; break; }
done
if [ -z "$firmware" ]; then
  if [ "$machine" = microvm ]; then firmware=qboot; else firmware=seabios; fi
fi
case "$firmware" in
  qboot) [ -n "$qboot" ] || die "--firmware qboot: no qboot.rom in QEMU's data directory"
         [ "$machine" = microvm ] || devs+=(-bios "$qboot") ;;
  seabios) [ "$machine" = q35 ] || die "--firmware seabios: microvm boots with qboot only" ;;
  *) die "--firmware must be qboot or seabios" ;;
esac

console_tail() {
  echo "---- console ($1) last 40 lines ----" >&2
  tr -d '\r' < "$1" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g' | tail -n 40 >&2
  echo "----" >&2
}
fail() {  # fail CONSOLE MESSAGE
  console_tail "$1"
  die "$2"
}
now() { date +%s.%N; }
elapsed() { awk -v s="$1" -v e="$(now)" 'BEGIN {printf "%.2f", e - s}'; }

qmp() {  # qmp SOCKET COMMAND: sends one QMP command after the capabilities handshake
  { echo '{"execute":"qmp_capabilities"}'; sleep 0.2; echo "{\"execute\":\"$2\"}"; sleep 0.3; } |
    timeout 5 socat - "UNIX-CONNECT:$1" > "$tmp/qmp.out" 2>&1
}

# boot N EXPECTED_DISK_LINE
boot() {
  local n=$1 want_disk=$2 con="$tmp/console.$1.log" sock="$tmp/qmp.$1.sock" start line t up rc
  : > "$con"
  start=$(now)
  qemu-system-x86_64 -accel tcg -m 1024 -smp 2 -nographic -nodefaults -no-reboot \
    "${devs[@]}" \
    -kernel "$kfile" -initrd "$out/fun-initrd.img" \
    -append "$(cat "$out/fun-cmdline") $extra" \
    -serial "file:$con" -qmp "unix:$sock,server=on,wait=off" \
    -pidfile "$tmp/qemu.pid" < /dev/null > "$tmp/qemu.$n.out" 2>&1 &
  qemu_pid=$!

  # Wait for the marker (or a failure) on the console.
  line=""
  while :; do
    line=$(grep -a -m1 -E 'fun-init: containerd ready after|fun-init: error:|Kernel panic|Out of memory|No working init|end Kernel panic' "$con" || true)
    [ -z "$line" ] || break
    if ! kill -0 "$qemu_pid" 2>/dev/null; then
      wait "$qemu_pid" && rc=0 || rc=$?
      qemu_pid=""
      cat "$tmp/qemu.$n.out" >&2
      fail "$con" "boot $n: QEMU exited with $rc before the marker"
    fi
    if [ "$(elapsed "$start" | cut -d. -f1)" -ge "$timeout" ]; then
      fail "$con" "boot $n: no marker within $timeout s"
    fi
    sleep 0.05
  done
  t=$(elapsed "$start")
  line=$(echo "$line" | tr -d '\r')
  case "$line" in
    *"containerd ready after"*) ;;
    *) fail "$con" "boot $n: '$line'" ;;
  esac
  up=$(echo "$line" | sed -n 's/.*containerd ready after \([0-9.]*\) s.*/\1/p')
  echo "boot_smoke: boot $n: marker after $t s wall, guest uptime $up s ($machine, $firmware, $kernel kernel)"
  grep -a -q "fun-init: data disk: $want_disk" "$con" ||
    fail "$con" "boot $n: expected 'fun-init: data disk: $want_disk'"
  if grep -a -q 'fun-init: error:' "$con"; then
    fail "$con" "boot $n: init reported an error"
  fi

  # Power off through the ACPI power button; QEMU must exit 0 in time.
  start=$(now)
  qmp "$sock" system_powerdown || { cat "$tmp/qmp.out" >&2; fail "$con" "boot $n: QMP system_powerdown failed"; }
  while kill -0 "$qemu_pid" 2>/dev/null; do
    if [ "$(elapsed "$start" | cut -d. -f1)" -ge 60 ]; then
      fail "$con" "boot $n: the VM did not power off within 60 s of system_powerdown"
    fi
    sleep 0.05
  done
  wait "$qemu_pid" && rc=0 || rc=$?
  qemu_pid=""
  [ $rc = 0 ] || { cat "$tmp/qemu.$n.out" >&2; fail "$con" "boot $n: QEMU exited with $rc after system_powerdown"; }
  grep -a -q 'fun-init: data disk unmounted' "$con" ||
    fail "$con" "boot $n: the data disk was not unmounted cleanly"
  grep -a -q 'fun-init: error:' "$con" && fail "$con" "boot $n: init reported an error during shutdown"
  echo "boot_smoke: boot $n: powered off cleanly $(elapsed "$start") s after system_powerdown"
}

boot 1 "formatted new"
for n in $(seq 2 "$boots"); do boot "$n" "existing ext4"; done
echo "boot_smoke: PASS ($boots boots, $out)"

#!/usr/bin/env bash
# Boot time of Fun's VM, median of N boots, with a breakdown (never a pass/fail threshold):
#   wall         `fun-vmctl start` until it returns (CRI Status reports RuntimeReady)
#   hostd        fun-hostd starting QEMU until the guest agent says containerd is up
#   pre-kernel   hostd minus the guest's uptime at that moment: QEMU start, firmware, kernel
#                load/decompress (the guest clock is not running yet)
#   kernel       guest uptime when /init begins stage 2 (kernel boot, initramfs unpack)
#   init         stage 2 until containerd's socket is up (modules, disk, network, containerd)
#   stop         `fun-vmctl stop` (agent shutdown, guest powers off)
# Each boot after the first reuses the data disk (the first formats it: reported apart).
#
#   perf/boot_time.sh [--build DIR] [--image-dir DIR] [--boots N] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
build=build image="" boots=5 json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --image-dir) image=$2; shift 2 ;;
    --boots) boots=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    *) echo "boot_time.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done
[ -n "$image" ] || image=$build/linuxkit
for f in fun-initrd.img fun-cmdline; do
  [ -f "$image/$f" ] || { echo "boot_time.sh: $image/$f missing: run linuxkit/build.sh" >&2; exit 1; }
done
vmctl=$build/bin/fun-vmctl
[ -x "$vmctl" ] || { echo "boot_time.sh: $vmctl not built" >&2; exit 1; }

work=$(mktemp -d /tmp/fun-boot-time-XXXXXX)
export FUN_HOME=$work/home
cleanup() { "$vmctl" stop --force >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
# The same image with fun.trace=1, so /init prints the guest uptime at each step.
mkdir -p "$work/image"
for f in "$image"/fun-kernel*; do ln -s "$(realpath "$f")" "$work/image/"; done
ln -s "$(realpath "$image/fun-initrd.img")" "$work/image/fun-initrd.img"
echo "$(cat "$image/fun-cmdline") fun.trace=1" > "$work/image/fun-cmdline"

now() { date +%s.%N; }
rows=()
for i in $(seq 0 "$boots"); do  # boot 0 formats the data disk
  t0=$(now)
  "$vmctl" start --image-dir "$work/image" --timeout 300 > /dev/null 2> "$work/start.err" ||
    { echo "boot $i failed:"; cat "$work/start.err"; exit 1; }
  t1=$(now)
  console=$FUN_HOME/instances/default/console.log
  state=$FUN_HOME/instances/default/state.json
  hostd=$(python3 -c "import json;s=json.load(open('$state'));print((s['ready_at_ms']-s['started_at_ms'])/1000)")
  guest=$(python3 -c "import json;print(json.load(open('$state'))['guest_uptime_at_ready_s'])")
  kernel=$(sed -n 's/^fun-init: trace \([0-9.]*\) stage 2.*/\1/p' "$console" | head -1)
  ready=$(sed -n 's/^fun-init: containerd ready after \([0-9.]*\) s.*/\1/p' "$console" | head -1)
  t2=$(now)
  "$vmctl" stop > /dev/null
  t3=$(now)
  row=$(awk -v a="$t0" -v b="$t1" -v h="$hostd" -v g="$guest" -v k="${kernel:-0}" -v r="${ready:-0}" \
    -v c="$t2" -v d="$t3" 'BEGIN {printf "%.2f %.2f %.2f %.2f %.2f %.2f", b-a, h, h-g, k, r-k, d-c}')
  echo "boot $i$([ "$i" = 0 ] && echo ' (formats the disk)'): wall hostd pre-kernel kernel init stop = $row"
  [ "$i" = 0 ] || rows+=("$row")
done

median_col() { printf '%s\n' "${rows[@]}" | awk -v c="$1" '{print $c}' | sort -g |
  awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
names=(wall hostd pre-kernel kernel init stop)
echo
echo "median of $boots boots (seconds, accel $(python3 -c "import json;print(json.load(open('$FUN_HOME/instances/default/state.json'))['accel'])")):"
out=""
for c in 1 2 3 4 5 6; do
  m=$(median_col $c)
  printf '  %-11s %6s\n' "${names[$((c-1))]}" "$m"
  out+="\"${names[$((c-1))]}\": $m, "
done
[ -z "$json" ] || echo "{${out%, }, \"boots\": $boots}" > "$json"

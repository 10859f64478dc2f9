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
#                     [--compare DIR [--compare-qemu-args ARGS]]
#
# --compare boots a second image (B) in alternation with the first (A), N boots each on the
# same data disk, and reports both medians and B/A: on a machine shared with noisy neighbours
# only boots taken in the same minutes compare. --compare-qemu-args is exported as
# FUN_QEMU_EXTRA_ARGS for B's boots only (e.g. a disk that B's /init expects).
set -euo pipefail
cd "$(dirname "$0")/.."
build=build image="" boots=5 json="" image_b="" qemu_b=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --image-dir) image=$2; shift 2 ;;
    --boots) boots=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    --compare) image_b=$2; shift 2 ;;
    --compare-qemu-args) qemu_b=$2; shift 2 ;;
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
# The same image(s) with fun.trace=1, so /init prints the guest uptime at each step.
traced() {  # traced SRC DST
  mkdir -p "$2"
  for f in "$1"/*; do
    case "$(basename "$f")" in
      fun-cmdline) echo "$(cat "$f") fun.trace=1" > "$2/fun-cmdline" ;;
      *) ln -s "$(realpath "$f")" "$2/" ;;
    esac
  done
}
traced "$image" "$work/image"
if [ -n "$image_b" ]; then
  [ -f "$image_b/fun-cmdline" ] || { echo "boot_time.sh: $image_b/fun-cmdline missing" >&2; exit 1; }
  traced "$image_b" "$work/image-b"
fi

now() { date +%s.%N; }
boot_once() {  # boot_once LABEL IMAGE_DIR QEMU_EXTRA_ARGS: prints the row
  local t0 t1 t2 t3 hostd guest kernel ready
  t0=$(now)
  FUN_QEMU_EXTRA_ARGS="$3" "$vmctl" start --image-dir "$2" --timeout 300 > /dev/null 2> "$work/start.err" ||
    { echo "boot $1 failed:" >&2; cat "$work/start.err" >&2; exit 1; }
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
  awk -v a="$t0" -v b="$t1" -v h="$hostd" -v g="$guest" -v k="${kernel:-0}" -v r="${ready:-0}" \
    -v c="$t2" -v d="$t3" 'BEGIN {printf "%.2f %.2f %.2f %.2f %.2f %.2f", b-a, h, h-g, k, r-k, d-c}'
}
rows_a=() rows_b=()
for i in $(seq 0 "$boots"); do  # boot 0 formats the data disk
  row=$(boot_once "$i" "$work/image" "${FUN_QEMU_EXTRA_ARGS:-}") || exit 1
  echo "boot $i$([ "$i" = 0 ] && echo ' (formats the disk)'): wall hostd pre-kernel kernel init stop = $row"
  [ "$i" = 0 ] || rows_a+=("$row")
  if [ -n "$image_b" ] && [ "$i" != 0 ]; then
    row=$(boot_once "$i (B)" "$work/image-b" "$qemu_b") || exit 1
    echo "boot $i (B): wall hostd pre-kernel kernel init stop = $row"
    rows_b+=("$row")
  fi
done

median_col() {  # median_col COLUMN ROW...
  local c=$1; shift
  printf '%s\n' "$@" | awk -v c="$c" '{print $c}' | sort -g |
    awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'
}
names=(wall hostd pre-kernel kernel init stop)
accel=$(python3 -c "import json;print(json.load(open('$FUN_HOME/instances/default/state.json'))['accel'])")
echo
if [ -z "$image_b" ]; then
  echo "median of $boots boots (seconds, accel $accel):"
else
  echo "median of $boots boots each, alternating (seconds, accel $accel):   A: $image   B: $image_b"
  printf '  %-11s %6s %6s %6s\n' "" A B B/A
fi
out=""
for c in 1 2 3 4 5 6; do
  a=$(median_col $c "${rows_a[@]}")
  if [ -z "$image_b" ]; then
    printf '  %-11s %6s\n' "${names[$((c-1))]}" "$a"
    out+="\"${names[$((c-1))]}\": $a, "
  else
    b=$(median_col $c "${rows_b[@]}")
    ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", (a > 0 ? b / a : 0)}')
    printf '  %-11s %6s %6s %6s\n' "${names[$((c-1))]}" "$a" "$b" "$ratio"
    out+="\"${names[$((c-1))]}\": $a, \"${names[$((c-1))]}_b\": $b, "
  fi
done
[ -z "$json" ] || echo "{${out%, }, \"boots\": $boots}" > "$json"

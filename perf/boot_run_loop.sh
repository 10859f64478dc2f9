#!/usr/bin/env bash
# Boot, run one container at once, stop: N times, counting guest CPU lockups. For the lockup CI
# saw right after a boot (docs/next.md, "Guest CPU lockup right after a boot"): runc and its
# child stuck in the kernel on both vCPUs while the first container started. One harness run
# boots ~15 times, so a rare lockup needs many cycles to show, and any fix needs a count before
# and after (never a single run).
#
#   perf/boot_run_loop.sh [--cycles N] [--build DIR] [--image-dir DIR] [--timeout S] [--keep]
#
# Each cycle: `fun run --rm BUSYBOX true` on a stopped instance (it boots the VM, as the
# harness's fun_run_starts_a_stopped_vm does), then `fun-vmctl stop`. A cycle whose run takes
# longer than --timeout, or whose console says "soft lockup" or "rcu_preempt detected stalls",
# counts as a lockup; its console is kept in the work directory. Prints one line per cycle and
# a summary (cycles, lockups, median run time). Needs the image (linuxkit/build.sh) and the
# container images (images/build.sh); serves them from a local registry on port 5000.
set -euo pipefail
cd "$(dirname "$0")/.."
cycles=20 build=build image_dir="" timeout=180 keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cycles) cycles=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --image-dir) image_dir=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "boot_run_loop.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done
[ -n "$image_dir" ] || image_dir=$build/linuxkit
for b in bin/fun bin/fun-vmctl; do
  [ -x "$build/$b" ] || { echo "boot_run_loop.sh: $build/$b not built: run cmake --build $build" >&2; exit 1; }
done
[ -f "$image_dir/fun-initrd.img" ] || { echo "boot_run_loop.sh: no image in $image_dir: run linuxkit/build.sh" >&2; exit 1; }

work=$(mktemp -d /tmp/fun-boot-run-loop.XXXXXX)
export FUN_HOME=$work/home FUN_IMAGE_DIR=$image_dir
cleanup() {
  "$build/bin/fun-vmctl" stop --force >/dev/null 2>&1 || true
  bash images/registry.sh stop --dir "$work/registry" >/dev/null 2>&1 || true
  if [ "$keep" = 1 ]; then echo "boot_run_loop: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
bash images/registry.sh start --dir "$work/registry" --port 5000 --images "$build/images" >/dev/null
image=10.0.2.2:5000/fun/busybox:latest

lockups=0 times=()
for i in $(seq "$cycles"); do
  t0=$(date +%s.%N)
  rc=0
  timeout "$timeout" "$build/bin/fun" run --rm "$image" true >/dev/null 2>"$work/run.err" || rc=$?
  t=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
  console=$FUN_HOME/instances/default/console.log
  what=ok
  if [ "$rc" != 0 ] || grep -q -E 'soft lockup|rcu_preempt detected stalls' "$console" 2>/dev/null; then
    lockups=$((lockups + 1))
    what="LOCKUP (rc $rc)"
    cp "$console" "$work/console.lockup.$i.log" 2>/dev/null || true
    keep=1
  fi
  times+=("$t")
  printf 'cycle %3d: %-16s run %s s (load %s)\n' "$i" "$what" "$t" "$(cut -d' ' -f1 /proc/loadavg)"
  # A lockup never stops gracefully; otherwise the stop the harness does.
  if [ "$rc" != 0 ]; then
    "$build/bin/fun-vmctl" stop --force >/dev/null 2>&1 || true
  else
    "$build/bin/fun-vmctl" stop >/dev/null 2>&1 || "$build/bin/fun-vmctl" stop --force >/dev/null 2>&1 || true
  fi
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "boot_run_loop: $cycles cycles, $lockups lockups, median boot+run $median s"
[ "$lockups" = 0 ]

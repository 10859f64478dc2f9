#!/usr/bin/env bash
# fun-9p side by side with diod, the reference 9P2000.L server, in one run on this machine:
# both serve the same folder with the same msize, driven by diod's own clients.
#   - sequential read MB/s of a 256 MiB file with diodcat (median of N runs)
#   - getattr ops/s with diodload -g (diodload attaches to aname "ctl" and stats "null": diod
#     serves its synthetic ctl file system; fun-9p serves a folder named ctl holding "null")
# Prints a table with the ratio fun-9p / diod (goal: >= 1.2 on both).
#
#   perf/p9_vs_diod.sh [--build DIR] [--size-mib N] [--runs N] [--seconds S] [--threads N]
#                      [--msize BYTES] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
build=build size_mib=256 runs=5 seconds=5 threads=8 msize=262144 json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --size-mib) size_mib=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --msize) msize=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    *) echo "p9_vs_diod.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done
fun9p=$build/bin/fun-9p
[ -x "$fun9p" ] || { echo "p9_vs_diod.sh: $fun9p not built: run cmake --build $build" >&2; exit 1; }
for p in diod diodcat diodload; do
  [ -x /usr/sbin/$p ] || { echo "p9_vs_diod.sh: /usr/sbin/$p missing: run ci/setup.sh" >&2; exit 1; }
done

work=$(mktemp -d /tmp/fun-p9-perf-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/data" "$work/ctl"
: > "$work/ctl/null"
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/data/file"
sum=$(md5sum < "$work/data/file" | cut -d' ' -f1)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }

fun_port=$(free_port)
"$fun9p" serve --export "data=$work/data" --export "ctl=$work/ctl" \
  --listen "tcp:127.0.0.1:$fun_port" --msize "$msize" --log-level warning > "$work/fun.log" 2>&1 &
pids+=($!)
diod_port=$(free_port)
/usr/sbin/diod -f -n -l "127.0.0.1:$diod_port" -e "$work/data" -e ctl -L "$work/diod.log" &
pids+=($!)
wait_port "$fun_port" || { echo "fun-9p did not start:"; cat "$work/fun.log"; exit 1; }
wait_port "$diod_port" || { echo "diod did not start:"; cat "$work/diod.log"; exit 1; }

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

check_bytes() {  # port aname: the bytes read back must be the file's (checked once, untimed)
  local got
  got=$(/usr/sbin/diodcat -s "127.0.0.1:$1" -a "$2" -m "$msize" file | md5sum | cut -d' ' -f1)
  [ "$got" = "$sum" ] || { echo "read through port $1 returned different bytes" >&2; exit 1; }
}

read_mbs() {  # port aname -> MB/s of one diodcat run into /dev/null (no checksum in the timing)
  local t0 t1
  t0=$(date +%s.%N)
  /usr/sbin/diodcat -s "127.0.0.1:$1" -a "$2" -m "$msize" file > /dev/null
  t1=$(date +%s.%N)
  echo "$size_mib $t0 $t1" | awk '{printf "%.1f\n", $1 * 1.048576 / ($3 - $2)}'
}

getattr_ops() {  # port -> ops/s
  /usr/sbin/diodload -s "127.0.0.1:$1" -g -n "$threads" -r "$seconds" -m "$msize" 2>&1 |
    sed -n 's/.*: \([0-9]*\) ops\/s.*/\1/p'
}

echo "p9_vs_diod: ${size_mib} MiB file, msize $msize, $runs read runs, getattr ${seconds}s x $threads threads"
check_bytes "$fun_port" data
check_bytes "$diod_port" "$work/data"
fun_reads=() diod_reads=()
for _ in $(seq "$runs"); do  # interleaved, so both see the same machine load
  fun_reads+=("$(read_mbs "$fun_port" data)")
  diod_reads+=("$(read_mbs "$diod_port" "$work/data")")
done
fun_read=$(printf '%s\n' "${fun_reads[@]}" | median)
diod_read=$(printf '%s\n' "${diod_reads[@]}" | median)
fun_ga=$(getattr_ops "$fun_port")
diod_ga=$(getattr_ops "$diod_port")
[ -n "$fun_ga" ] && [ -n "$diod_ga" ] || { echo "diodload printed no ops/s" >&2; exit 1; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
printf '\n%-28s %12s %12s %8s\n' "metric" "fun-9p" "diod" "ratio"
printf '%-28s %12s %12s %8s\n' "sequential read MB/s" "$fun_read" "$diod_read" "$(ratio "$fun_read" "$diod_read")"
printf '%-28s %12s %12s %8s\n' "getattr ops/s (diodload -g)" "$fun_ga" "$diod_ga" "$(ratio "$fun_ga" "$diod_ga")"
echo "(read runs, MB/s: fun-9p ${fun_reads[*]}; diod ${diod_reads[*]})"
if [ -n "$json" ]; then
  cat > "$json" <<JSON
{"size_mib": $size_mib, "msize": $msize, "runs": $runs,
 "read_mbs": {"fun9p": $fun_read, "diod": $diod_read, "ratio": $(ratio "$fun_read" "$diod_read")},
 "getattr_ops": {"fun9p": $fun_ga, "diod": $diod_ga, "ratio": $(ratio "$fun_ga" "$diod_ga")}}
JSON
fi

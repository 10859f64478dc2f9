#!/usr/bin/env bash
# Fun's shared folders as a container in the VM sees them, side by side with the two other ways
# to get a host folder into a QEMU guest over 9P, all in the SAME VM and the same run:
#   fun     a host folder shared by fun-hostd (lib/p9), mounted by fun-guestd: with
#           --transport serial (the default) virtio-serial port -> guest relay -> trans=unix;
#           with --transport vsock fun-hostd's own vhost-user vsock device -> trans=fd on a
#           vsock stream, no relay (`fun run -v` bind-mounts either)
#   diod    Debian's diod on the host's 127.0.0.1:<free port>, mounted in the VM with trans=tcp
#           to 10.0.2.2 (QEMU's user-mode network reaches the host's loopback there)
#   virtfs  QEMU's own virtio-9p (-virtfs local,security_model=none, added through fun-hostd's
#           $FUN_QEMU_EXTRA_ARGS), mounted with trans=virtio
#   native  the same operations on a host folder directly, for scale
# diod and virtfs are mounted with fun's own options but the transport: version=9p2000.L,
# msize=524288, cache=<--cache>, access=client, nodev, nosuid (virtio caps msize at 512000:
# the table's header shows what each mount got). The four folders are on one host file system.
# Operations, in a privileged busybox container (--privileged --network host: it mounts (b)
# and (c) itself), timed inside the VM, never including `fun exec`'s own cost:
#   seq write  dd if=/dev/zero bs=1M count=SIZE conv=fsync (the data reaches the host's disk)
#   seq read   dd of that file to /dev/null, bs=1M, after dropping the VM's page cache (the host
#              still has the file in its page cache, natively too: this is the transport, not
#              the disk)
#   create / stat / unlink   of FILES empty files in a new folder, each phase timed apart by
#              build/perf/small_files (static: the same binary natively and in the container)
# With --transport vsock the table is followed by fun-hostd's share of fun's time per phase
# (its vsock device's reply latency, read with SIGUSR1 before and after each phase) and what
# fun/virtfs would be with a host that answered in no time: the ceiling of host-side work.
# Targets run interleaved within each run, so all see the same machine load; each figure is the
# median of RUNS. Under TCG everything is slow: read the ratios, measured side by side, not the
# absolute figures. fun/diod and fun/virtfs >= 1.0 is the goal; "fun %native" is for scale.
#
#   perf/p9_vm.sh [--build DIR] [--image-dir DIR] [--size-mib N] [--files N] [--runs N]
#                 [--cache mmap|loose|none] [--vcpus N] [--transport serial|vsock]
#                 [--json FILE] [--keep]
#
# --vcpus N boots the VM with N vCPUs (QEMU -smp N through FUN_QEMU_EXTRA_ARGS) instead of the
# config's: under TCG one vCPU makes every 9P transport 2-3x faster on small files (no
# cross-vCPU wakeups), which says where the time goes.
#
# --cache sets diod's and virtfs's mounts; fun's share uses fun-guestd's mode, mmap unless the
# image's fun-cmdline says fun.share_cache=MODE, which this script adds for --cache.
# --keep leaves the work dir (FUN_HOME, logs) in /tmp. Needs 127.0.0.1:5000 for a moment: the
# local registry the VM pulls fun/busybox from (images/registry.sh; one already serving it there
# is used as it is), diod (ci/setup.sh) and QEMU with virtfs. Boots one VM in a private FUN_HOME
# and stops it on exit, failure or not.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build image="" size_mib=256 files=10000 runs=3 cache=mmap json="" keep=0 vcpus=""
transport=serial
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --image-dir) image=$2; shift 2 ;;
    --size-mib) size_mib=$2; shift 2 ;;
    --files) files=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --vcpus) vcpus=$2; shift 2 ;;
    --transport) transport=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "p9_vm.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done
die() { echo "p9_vm.sh: $*" >&2; exit 1; }
case "$cache" in mmap|loose|none) ;; *) die "--cache $cache: use mmap, loose or none" ;; esac
case "$transport" in serial|vsock) ;; *) die "--transport $transport: use serial or vsock" ;; esac
for n in "$size_mib" "$files" "$runs" ${vcpus:+"$vcpus"}; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "--size-mib, --files, --runs and --vcpus take a positive number"
done
[ -n "$image" ] || image=$build/linuxkit
for f in fun-initrd.img fun-cmdline; do
  [ -f "$image/$f" ] || die "$image/$f missing: run linuxkit/build.sh"
done
for b in bin/fun bin/fun-vmctl perf/small_files; do
  [ -x "$build/$b" ] || die "$build/$b not built: run cmake --build $build"
done
[ -f "$build/images/images.txt" ] || die "$build/images missing: run images/build.sh --out $build/images"
[ -x /usr/sbin/diod ] || die "/usr/sbin/diod missing: run ci/setup.sh"
qemu-system-x86_64 -device help 2>/dev/null | grep -q virtio-9p-pci ||
  die "this QEMU has no virtio-9p-pci (virtfs): cannot compare with it"

work=$(mktemp -d /tmp/fun-p9vm-XXXXXX)
export FUN_HOME=$work/home
fun=$build/bin/fun vmctl=$build/bin/fun-vmctl
ctr=p9perf tag=funperf
pids=()
cleanup() {
  # The VM first (its mounts of diod go with it), then what serves it.
  "$vmctl" stop >/dev/null 2>&1 || "$vmctl" stop --force >/dev/null 2>&1 || true
  images/registry.sh stop --dir "$work/registry" >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$keep" = 1 ]; then echo "p9_vm.sh: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
mkdir -p "$work"/{fun,diod,virtfs,native}
# v9fs attaches a mount's root as "nobody" under access=client (each user attaches as itself
# afterwards), and diod checks that user's access to the export: mktemp's 0700 would fail it.
chmod 755 "$work"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }

diod_port=$(free_port)
/usr/sbin/diod -f -n -l "127.0.0.1:$diod_port" -e "$work/diod" -L "$work/diod.log" &
pids+=($!)
wait_port "$diod_port" || { cat "$work/diod.log" >&2; die "diod did not start"; }

# The image as built, with fun.share_cache for fun-guestd when --cache is not its default.
mkdir -p "$work/image"
for f in "$image"/fun-kernel*; do ln -s "$(realpath "$f")" "$work/image/"; done
ln -s "$(realpath "$image/fun-initrd.img")" "$work/image/fun-initrd.img"
# The system disk, when the image has one (its fun-cmdline says fun.system=).
[ ! -f "$image/fun-system.img" ] || ln -s "$(realpath "$image/fun-system.img")" "$work/image/"
cmdline=$(cat "$image/fun-cmdline")
[ "$cache" = mmap ] || cmdline="$cmdline fun.share_cache=$cache"
echo "$cmdline" > "$work/image/fun-cmdline"

echo "p9_vm: booting the VM (virtfs on $work/virtfs, diod on 127.0.0.1:$diod_port) ..."
FUN_QEMU_EXTRA_ARGS="-virtfs local,path=$work/virtfs,mount_tag=$tag,security_model=none,id=$tag${vcpus:+ -smp $vcpus}" \
  "$vmctl" start --image-dir "$work/image" --share "$work/fun" --share-transport "$transport" \
    --timeout 600 >/dev/null 2>"$work/start.err" ||
  { cat "$work/start.err" >&2; die "the VM did not start (logs: fun-vmctl logs --hostd; --keep keeps them)"; }
grep -q -- "-virtfs local,path=$work/virtfs" "$FUN_HOME/instances/default/hostd.log" ||
  die "hostd.log does not show the -virtfs argument: is fun-hostd older than FUN_QEMU_EXTRA_ARGS?"

# busybox from the local registry the VM trusts (10.0.2.2:5000): one already serving it is used
# as it is, else ours runs for the pull only.
own_registry=0
if ! curl -sf http://127.0.0.1:5000/v2/fun/busybox/tags/list 2>/dev/null | grep -q '"latest"'; then
  images/registry.sh start --dir "$work/registry" --port 5000 --images "$build/images" >/dev/null ||
    die "could not start the local registry on 127.0.0.1:5000 (is the port taken?)"
  own_registry=1
fi
"$fun" run -d --name "$ctr" --privileged --network host -v "$work/fun:/mnt/fun" \
  10.0.2.2:5000/fun/busybox:latest sleep 1000000 >/dev/null
[ "$own_registry" = 0 ] || images/registry.sh stop --dir "$work/registry" >/dev/null
# The helper into the container's own file system (not on any share being measured).
"$fun" exec -i "$ctr" sh -c 'cat > /small_files && chmod 755 /small_files' < "$build/perf/small_files"
# A timeout of its own: without one, ExecSync's deadline is 10 minutes, which 10k small files
# over 9P under TCG on a loaded machine can take.
in_vm() { "$fun" exec --timeout 7200 "$ctr" sh -c "$1"; }

opts="version=9p2000.L,msize=524288,cache=$cache,access=client,nodev,nosuid"
in_vm "
  set -e
  # init loads 9pnet_virtio (modules.net) in the background: wait for it and for our tag.
  i=0
  until cat /sys/bus/virtio/drivers/9pnet_virtio/virtio*/mount_tag 2>/dev/null | grep -q $tag; do
    i=\$((i+1)); [ \$i -lt 600 ] || { echo 'no virtio-9p device tagged $tag in the VM' >&2; exit 1; }
    sleep 0.1
  done
  mkdir -p /mnt/diod /mnt/virtfs
  mount -t 9p -o trans=tcp,port=$diod_port,aname=$work/diod,$opts 10.0.2.2 /mnt/diod
  mount -t 9p -o trans=virtio,$opts $tag /mnt/virtfs
  echo ok > /mnt/virtfs/.probe && echo ok > /mnt/diod/.probe && echo ok > /mnt/fun/.probe
" || die "mounting diod or virtfs in the VM failed"
for d in fun diod virtfs; do
  [ "$(cat "$work/$d/.probe")" = ok ] || die "the $d mount does not reach $work/$d"
  rm -f "$work/$d/.probe"
done
mounts=$(in_vm "grep ' 9p ' /proc/mounts")

raw=$work/raw.txt
: > "$raw"
# vm_dir TARGET: the folder in the container.
vm_dir() { echo "/mnt/$1"; }
seq_write() {  # target -> start end (seconds)
  if [ "$1" = native ]; then
    local a b; a=$(date +%s.%N)
    dd if=/dev/zero of="$work/native/seq" bs=1048576 count="$size_mib" conv=fsync status=none
    b=$(date +%s.%N); echo "$a $b"
  else
    in_vm "read a _ </proc/uptime; dd if=/dev/zero of=$(vm_dir "$1")/seq bs=1048576 count=$size_mib conv=fsync 2>/dev/null || exit 1; read b _ </proc/uptime; echo \$a \$b"
  fi
}
seq_read() {  # target -> start end; removes the file
  if [ "$1" = native ]; then
    local a b; a=$(date +%s.%N)
    dd if="$work/native/seq" of=/dev/null bs=1048576 status=none
    b=$(date +%s.%N); rm -f "$work/native/seq"; echo "$a $b"
  else
    in_vm "sync; echo 3 > /proc/sys/vm/drop_caches; read a _ </proc/uptime; dd if=$(vm_dir "$1")/seq of=/dev/null bs=1048576 2>/dev/null || exit 1; read b _ </proc/uptime; rm -f $(vm_dir "$1")/seq; echo \$a \$b"
  fi
}
small() {  # target -> the helper's JSON
  if [ "$1" = native ]; then
    "$build/perf/small_files" "$work/native/sf" --count "$files"
  else
    in_vm "/small_files $(vm_dir "$1")/sf --count $files"
  fi
}
mibs() { awk -v n="$size_mib" '{printf "%.2f", ($2 > $1 ? n / ($2 - $1) : 0)}'; }
# Over vsock, fun-hostd's device counts its replies and the host time they took (from the
# guest's request to the first bytes of the answer): SIGUSR1 logs the counters. host_counters
# prints "replies seconds"; host_share BEFORE AFTER SECONDS prints the host's fraction of a
# phase's time (an upper bound: the fun exec around a phase also moves a few requests).
hostd_log=$FUN_HOME/instances/default/hostd.log
host_counters() {
  local n m=0
  n=$(grep -c 'vsock device on SIGUSR1' "$hostd_log" || true)
  local pid _
  read -r pid _ < "$FUN_HOME/instances/default/hostd.pid"  # "pid start-time"
  kill -USR1 "$pid" || die "kill -USR1 fun-hostd failed"
  for _ in $(seq 100); do
    m=$(grep -c 'vsock device on SIGUSR1' "$hostd_log" || true)
    [ "$m" -gt "$n" ] && break
    sleep 0.05
  done
  [ "$m" -gt "$n" ] || die "fun-hostd logged no counters on SIGUSR1"
  grep 'vsock device on SIGUSR1' "$hostd_log" | tail -1 |
    sed -E 's/.* ([0-9]+) replies in ([0-9.]+) s of host time.*/\1 \2/'
}
host_share() { echo "$1 $2 $3" | awk '{printf "%.4f", ($5 > 0 ? ($4 - $2) / $5 : 0)}'; }
measure_host=0
[ "$transport" = vsock ] && measure_host=1

targets=(fun diod virtfs native)
echo "p9_vm: $runs runs of: dd ${size_mib} MiB write+read, ${files} files create/stat/unlink; cache=$cache"
for r in $(seq "$runs"); do
  # Rotate the order each run: no target always goes first (or right after the host's dd).
  order=("${targets[@]:$(( (r - 1) % 4 ))}" "${targets[@]:0:$(( (r - 1) % 4 ))}")
  for t in "${order[@]}"; do
    host=$([ "$t" = fun ] && echo "$measure_host" || echo 0)
    [ "$host" = 0 ] || c0=$(host_counters)
    wt=$(seq_write "$t") || die "seq write on $t failed"
    [ "$host" = 0 ] || c1=$(host_counters)
    rt=$(seq_read "$t") || die "seq read on $t failed"
    [ "$host" = 0 ] || c2=$(host_counters)
    s=$(small "$t") || die "small files on $t failed"
    [ "$host" = 0 ] || c3=$(host_counters)
    w=$(echo "$wt" | mibs)
    rd=$(echo "$rt" | mibs)
    echo "$t write_mibs $w" >> "$raw"
    echo "$t read_mibs $rd" >> "$raw"
    if [ "$host" = 1 ]; then
      small_s=$(echo "$s" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["create_s"]+j["stat_s"]+j["unlink_s"])')
      echo "host write $(host_share "$c0" "$c1" "$(echo "$wt" | awk '{print $2-$1}')")" >> "$raw"
      echo "host read $(host_share "$c1" "$c2" "$(echo "$rt" | awk '{print $2-$1}')")" >> "$raw"
      echo "host small $(host_share "$c2" "$c3" "$small_s")" >> "$raw"
    fi
    echo "$s" | python3 -c '
import json, sys
t, n = sys.argv[1], int(sys.argv[2])
j = json.load(sys.stdin)
for k in ("create", "stat", "unlink"):
    print(t, k + "_ops", "%.1f" % (n / j[k + "_s"] if j[k + "_s"] > 0 else 0))' "$t" "$files" >> "$raw"
    echo "  run $r $t: write $w MiB/s, read $rd MiB/s, small files $s"
  done
done

state=$FUN_HOME/instances/default/state.json
config=$FUN_HOME/instances/default/config.json
python3 - "$raw" "$json" "$state" "$config" "$size_mib" "$files" "$runs" "$cache" "$mounts" "$vcpus" "$transport" <<'PY'
import json, statistics, sys
raw, out, state, config, size_mib, files, runs, cache, mounts, vcpus, transport = sys.argv[1:]
vals, host = {}, {}
for line in open(raw):
    t, m, v = line.split()
    if t == "host":
        host.setdefault(m, []).append(float(v))
    else:
        vals.setdefault(m, {}).setdefault(t, []).append(float(v))
host_phase = {"write_mibs": "write", "read_mibs": "read", "create_ops": "small",
              "stat_ops": "small", "unlink_ops": "small"}
accel = json.load(open(state)).get("accel", "?")
cpus = int(vcpus) if vcpus else json.load(open(config)).get("cpus", "?")
load = open("/proc/loadavg").read().split()[0]
rows = [("write_mibs", "seq write MiB/s"), ("read_mibs", "seq read MiB/s"),
        ("create_ops", "create files/s"), ("stat_ops", "stat files/s"),
        ("unlink_ops", "unlink files/s")]
ratio = lambda a, b: round(a / b, 2) if b > 0 else 0.0
print("\n9P mounts in the VM (as the container sees them):")
for m in mounts.splitlines():
    print("  " + m)
print(f"\naccel {accel}, {cpus} vCPUs, host load {load}; median of {runs} runs; "
      f"dd {size_mib} MiB, {files} files, cache={cache}; fun's shares over {transport}")
hdr = f"{'metric':<17}{'fun':>10}{'diod':>10}{'virtfs':>10}{'native':>11}{'fun/diod':>10}{'fun/virtfs':>11}{'fun %native':>12}"
print(hdr)
result = {"size_mib": int(size_mib), "files": int(files), "runs": int(runs), "cache": cache,
          "transport": transport,
          "accel": accel, "cpus": cpus, "metrics": {}}
for key, name in rows:
    med = {t: statistics.median(vals[key][t]) for t in ("fun", "diod", "virtfs", "native")}
    pct = 100 * med["fun"] / med["native"] if med["native"] > 0 else 0
    print(f"{name:<17}{med['fun']:>10.1f}{med['diod']:>10.1f}{med['virtfs']:>10.1f}"
          f"{med['native']:>11.1f}{ratio(med['fun'], med['diod']):>10.2f}"
          f"{ratio(med['fun'], med['virtfs']):>11.2f}{pct:>11.1f}%")
    result["metrics"][key] = dict(med, fun_vs_diod=ratio(med["fun"], med["diod"]),
                                  fun_vs_virtfs=ratio(med["fun"], med["virtfs"]),
                                  fun_pct_native=round(pct, 2), runs=vals[key])
print("(ratios: fun's figure over the other's, higher is better for fun; goal >= 1.00)")
if host:
    # The host's part of fun's time, from fun-hostd's vsock reply counters: what fun/virtfs
    # would be if fun-hostd answered every request in no time at all.
    print(f"\nfun-hostd's share of fun's time (vsock reply latency; median of {runs} runs):")
    for key, name in rows:
        share = statistics.median(host[host_phase[key]])
        med = result["metrics"][key]
        best = med["fun"] / (1 - share) if share < 1 else 0
        print(f"  {name:<17}host {100 * share:5.1f}%   fun/virtfs with a host taking no time: "
              f"{ratio(best, med['virtfs']):.2f}")
        med.update(fun_host_share=round(share, 4),
                   fun_vs_virtfs_host_free=ratio(best, med["virtfs"]),
                   fun_host_share_runs=host[host_phase[key]])
if out:
    json.dump(result, open(out, "w"), indent=1)
PY

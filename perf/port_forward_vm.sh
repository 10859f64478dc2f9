#!/usr/bin/env bash
# A published port through Fun's VM under the current accelerator (TCG here): what a client on
# the host gets from a container's port, next to the same client and echo server on direct
# loopback for scale (never a pass/fail threshold). perf/port_forward.sh measures the forward
# itself without a VM, against socat and haproxy; this is the number a user sees.
#   echo throughput  perf/tcp_rr stream: 64 KiB writes for N seconds, the echoed bytes per
#                    second (each byte crosses the path both ways)
#   RR latency       perf/tcp_rr ping: 1 byte each way, one connection, median of M
#   connection rate  perf/tcp_rr churn: C connections, 8 at a time, each connect, 1 byte each
#                    way, close (every one is an agent channel dialed into the VM)
# The VM side is fun/echo:1.0 (images/echo/echo.c) behind `fun run -p`, pulled from a
# registry this script starts on 127.0.0.1:5000 (the port must be free), in a temp FUN_HOME.
#
# --agent-transport tcp|vsock starts the VM with that agent channel first (fun-vmctl start
# --agent-transport): QEMU's hostfwd to the guest's tcp:7070, or fun-hostd's vsock device.
#
#   perf/port_forward_vm.sh [--build DIR] [--seconds N] [--rr-count M] [--churn C]
#                           [--agent-transport T]
set -euo pipefail
cd "$(dirname "$0")/.."
build=build seconds=5 rr_count=2000 churn=2000 agent=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --rr-count) rr_count=$2; shift 2 ;;
    --churn) churn=$2; shift 2 ;;
    --agent-transport) agent=$2; shift 2 ;;
    *) echo "port_forward_vm.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done
for b in bin/fun bin/fun-vmctl perf/tcp_rr; do
  [ -x "$build/$b" ] || { echo "port_forward_vm.sh: $build/$b not built: run cmake --build $build" >&2; exit 1; }
done
[ -f "$build/images/images.txt" ] || { echo "port_forward_vm.sh: $build/images missing: run images/build.sh --out $build/images" >&2; exit 1; }

work=$(mktemp -d /tmp/fun-port-forward-vm-XXXXXX)
export FUN_HOME=$work/home
pids=()
cleanup() {
  "$build/bin/fun-vmctl" stop --force >/dev/null 2>&1 || true
  images/registry.sh stop --dir "$work/registry" >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

images/registry.sh start --dir "$work/registry" --port 5000 --images "$build/images" >/dev/null
# The host-side baseline: tcp_rr's own echo server on loopback.
"$build/perf/tcp_rr" serve --listen tcp:127.0.0.1:0 > "$work/rr.out" &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/rr.out" 2>/dev/null && break; sleep 0.05; done
direct_port=$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/rr.out")
vm_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

echo "port_forward_vm: starting the VM and fun/echo behind -p 127.0.0.1:$vm_port:7 ..."
t0=$(date +%s.%N)
if [ -n "$agent" ]; then
  "$build/bin/fun-vmctl" start --agent-transport "$agent" >/dev/null
fi
"$build/bin/fun" run -d --name echo -p "127.0.0.1:$vm_port:7" 10.0.2.2:5000/fun/echo:1.0 >/dev/null
for _ in $(seq 600); do
  "$build/perf/tcp_rr" ping --connect "127.0.0.1:$vm_port" --count 1 >/dev/null 2>&1 && break
  sleep 0.1
done
echo "port_forward_vm: ready after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s ($(grep -o 'accel [a-z]*' "$FUN_HOME/instances/default/hostd.log" | head -1 || echo 'accel ?'))"

field() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }
mibs() { "$build/perf/tcp_rr" stream --connect "127.0.0.1:$1" --seconds "$seconds" | field mib_per_s; }
rr() { "$build/perf/tcp_rr" ping --connect "127.0.0.1:$1" --count "$rr_count" | field median_us; }
conns() { "$build/perf/tcp_rr" churn --connect "127.0.0.1:$1" --count "$churn" --clients 8 | field per_s; }
d_mib=$(mibs "$direct_port"); d_rr=$(rr "$direct_port"); d_conn=$(conns "$direct_port")
v_mib=$(mibs "$vm_port"); v_rr=$(rr "$vm_port"); v_conn=$(conns "$vm_port")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}'; }
echo "agent channel: $(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c.get("agent_transport", "tcp"))' "$FUN_HOME/instances/default/config.json")"
printf '\n%-34s %14s %12s %10s\n' "path ($(nproc) cpus, load $(cut -d' ' -f1 /proc/loadavg))" "echo MiB/s" "RR med µs" "conn/s"
printf '%-34s %14s %12s %10s\n' "direct loopback (tcp_rr serve)" "$d_mib" "$d_rr" "$d_conn"
printf '%-34s %14s %12s %10s\n' "-p through the VM (fun/echo)" "$v_mib" "$v_rr" "$v_conn"
printf '%-34s %14s %12s %10s\n' "VM / direct" "$(ratio "$v_mib" "$d_mib")" "$(ratio "$v_rr" "$d_rr")" "$(ratio "$v_conn" "$d_conn")"

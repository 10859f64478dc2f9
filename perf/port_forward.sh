#!/usr/bin/env bash
# Published-port forwarding on this host, without a VM: what fun's TCP forward costs next to
# direct loopback and the usual relays, in one run on one machine (never a pass/fail
# threshold). Each path carries
#   - iperf3 throughput, one stream (-P 1) and four streams (-P 4), N seconds each
#   - request/response latency: perf/tcp_rr (1 byte each way, one connection), median of M
# Paths, each to the same iperf3 server and the same tcp_rr echo server on 127.0.0.1:
#   direct        the client connects to the servers themselves
#   fun           fun-forward -> agent channel (TCP loopback) -> fun-guestd -> the server: both
#                 of a published port's relays, as with a VM, minus the VM (fun-guestd runs
#                 natively here, with a temp token)
#   fun --direct  fun-forward dialing the servers itself: the host relay alone
#   socat         socat TCP-LISTEN:P,fork,reuseaddr TCP:127.0.0.1:SERVERPORT
#   haproxy       haproxy in tcp mode, a minimal config in a temp file
# The table gives each path's numbers and its ratios to direct and to socat. Every process
# shares this machine's cores with the client and the server, and a busy machine moves the
# throughput a lot from run to run: the second table gives what stays meaningful under load,
# the CPU the relay processes spent per GB of the one-stream run (fun: fun-forward plus
# fun-guestd; socat: the listener and its forked children; from /proc/PID/stat).
#
# Congestion control: every path runs under the host's default (net.ipv4.tcp_congestion_control,
# printed in the header), except that fun's relays switch their own loopback sockets from bbr to
# cubic (lib/base/socket.h, UnpaceIfLoopback): bbr paces from a timer, which on loopback is pure
# cost. iperf3's client, socat and haproxy keep the host's choice. --congestion NAME runs the
# whole measurement in a private network namespace whose default is NAME (needs root), to see
# the paths under another host default without touching this host's.
#
#   perf/port_forward.sh [--build DIR] [--seconds N] [--rr-count M] [--json FILE]
#                        [--congestion cubic|bbr|reno]
set -euo pipefail
cd "$(dirname "$0")/.."
build=build seconds=5 rr_count=10000 json="" congestion=""
args=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --rr-count) rr_count=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    --congestion) congestion=$2; shift 2 ;;
    *) echo "port_forward.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done
if [ -n "$congestion" ] && [ -z "${FUN_PERF_IN_NETNS:-}" ]; then
  # Again, in a network namespace of its own: loopback up, the default congestion control set.
  exec unshare --net env FUN_PERF_IN_NETNS=1 bash -c '
    ip link set lo up &&
    sysctl -qw net.ipv4.tcp_congestion_control="$1" ||
      { echo "port_forward.sh: --congestion $1: no such congestion control here, or not root" >&2; exit 2; }
    shift; exec "$@"' _ "$congestion" "$0" "${args[@]}"
fi
for b in bin/fun-forward bin/fun-guestd perf/tcp_rr; do
  [ -x "$build/$b" ] || { echo "port_forward.sh: $build/$b not built: run cmake --build $build" >&2; exit 1; }
done
for p in iperf3 socat haproxy python3; do
  command -v $p >/dev/null || { echo "port_forward.sh: $p missing: run ci/setup.sh" >&2; exit 1; }
done

work=$(mktemp -d /tmp/fun-port-forward-perf-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
start() {  # name command...: runs it in the background, logging to $work/name.log
  local name=$1; shift
  "$@" > "$work/$name.log" 2>&1 &
  pids+=($!)
  eval "pid_$name=$!"
}

# The servers.
iperf_port=$(free_port) rr_port=$(free_port)
start iperf3 iperf3 -s -B 127.0.0.1 -p "$iperf_port"
start tcp_rr "$build/perf/tcp_rr" serve --listen "tcp:127.0.0.1:$rr_port"

# fun: fun-guestd with a temp token, fun-forward in front of it.
head -c 32 /dev/urandom > "$work/secret"
chmod 600 "$work/secret"
agent_port=$(free_port)
start guestd "$build/bin/fun-guestd" --listen "tcp:127.0.0.1:$agent_port" \
  --token-file "$work/secret" --containerd-socket "$work/none.sock" --no-timesync \
  --log-level warning
wait_port "$agent_port" || { echo "fun-guestd did not start:"; cat "$work/guestd.log"; exit 1; }
fun_iperf=$(free_port) fun_rr=$(free_port)
start fun "$build/bin/fun-forward" --agent "tcp:127.0.0.1:$agent_port" --token-file "$work/secret" \
  -p "$fun_iperf:127.0.0.1:$iperf_port" -p "$fun_rr:127.0.0.1:$rr_port"
fund_iperf=$(free_port) fund_rr=$(free_port)
start fun_direct "$build/bin/fun-forward" --direct \
  -p "$fund_iperf:127.0.0.1:$iperf_port" -p "$fund_rr:127.0.0.1:$rr_port"

# socat, one per server.
socat_iperf=$(free_port) socat_rr=$(free_port)
start socat_iperf socat "TCP-LISTEN:$socat_iperf,fork,reuseaddr,bind=127.0.0.1" "TCP:127.0.0.1:$iperf_port"
start socat_rr socat "TCP-LISTEN:$socat_rr,fork,reuseaddr,bind=127.0.0.1" "TCP:127.0.0.1:$rr_port"

# haproxy, tcp mode.
ha_iperf=$(free_port) ha_rr=$(free_port)
cat > "$work/haproxy.cfg" <<CFG
global
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 1m
  timeout server 1m
frontend iperf
  bind 127.0.0.1:$ha_iperf
  default_backend iperf
backend iperf
  server s 127.0.0.1:$iperf_port
frontend rr
  bind 127.0.0.1:$ha_rr
  default_backend rr
backend rr
  server s 127.0.0.1:$rr_port
CFG
start haproxy haproxy -db -f "$work/haproxy.cfg"

for p in "$iperf_port" "$rr_port" "$fun_iperf" "$fun_rr" "$fund_iperf" "$fund_rr" \
         "$socat_iperf" "$socat_rr" "$ha_iperf" "$ha_rr"; do
  wait_port "$p" || { echo "port_forward.sh: nothing listens on $p:"; tail -n 5 "$work"/*.log; exit 1; }
done

iperf_run() {  # port streams: one iperf3 run into $work/iperf.json
  iperf3 -c 127.0.0.1 -p "$1" -P "$2" -t "$seconds" -J > "$work/iperf.json" ||
    { echo "port_forward.sh: iperf3 through port $1 failed:" >&2; tail -n 20 "$work/iperf.json" >&2; exit 1; }
}
iperf_field() {  # gbits | gbytes: of the last run, as received
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["end"]["sum_received"]
print("%.2f" % (r["bits_per_second"] / 1e9) if sys.argv[2] == "gbits" else "%.3f" % (r["bytes"] / 1e9))' "$work/iperf.json" "$1"
}
clk_tck=$(getconf CLK_TCK)
cpu_ms() {  # pids... -> CPU ms spent by them and their reaped children
  local total=0 p
  for p in "$@"; do
    total=$((total + $(awk -v t="$clk_tck" '{print int(($14 + $15 + $16 + $17) * 1000 / t)}' "/proc/$p/stat")))
  done
  echo "$total"
}
settle_children() {  # pid: wait (bounded) until socat's forked children are gone and reaped
  for _ in $(seq 100); do pgrep -P "$1" >/dev/null || return 0; sleep 0.02; done
}
rr_us() {  # port -> median round trip in µs
  "$build/perf/tcp_rr" ping --connect "127.0.0.1:$1" --count "$rr_count" |
    python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)["median_us"])'
}

names=("direct" "fun" "fun --direct" "socat" "haproxy")
iperf_ports=("$iperf_port" "$fun_iperf" "$fund_iperf" "$socat_iperf" "$ha_iperf")
rr_ports=("$rr_port" "$fun_rr" "$fund_rr" "$socat_rr" "$ha_rr")
relay_pids=("" "$pid_fun $pid_guestd" "$pid_fun_direct" "$pid_socat_iperf" "$pid_haproxy")
host_cc=$(cat /proc/sys/net/ipv4/tcp_congestion_control)
echo "port_forward: iperf3 ${seconds}s per run, tcp_rr $rr_count exchanges of 1 byte," \
  "$(nproc) cpus, load average $(cut -d' ' -f1-3 /proc/loadavg)," \
  "congestion control $host_cc${congestion:+ (a private network namespace)}"
one=() four=() rr=() cpu=()
for i in "${!names[@]}"; do
  # shellcheck disable=SC2086  # relay_pids holds several pids
  before=$([ -n "${relay_pids[$i]}" ] && cpu_ms ${relay_pids[$i]} || echo 0)
  iperf_run "${iperf_ports[$i]}" 1
  [ "${names[$i]}" = socat ] && settle_children "$pid_socat_iperf"
  # shellcheck disable=SC2086
  after=$([ -n "${relay_pids[$i]}" ] && cpu_ms ${relay_pids[$i]} || echo 0)
  one+=("$(iperf_field gbits)")
  cpu+=("$(awk -v ms=$((after - before)) -v gb="$(iperf_field gbytes)" 'BEGIN {printf "%.2f", ms / 1000 / gb}')")
  iperf_run "${iperf_ports[$i]}" 4
  four+=("$(iperf_field gbits)")
  rr+=("$(rr_us "${rr_ports[$i]}")")
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
printf '\n%-13s %9s %9s %8s | %-21s | %-21s\n' "" "1-stream" "4-stream" "RR" "vs direct" "vs socat"
printf '%-13s %9s %9s %8s | %6s %6s %7s | %6s %6s %7s\n' "path" "Gbit/s" "Gbit/s" "med µs" \
  "1-str" "4-str" "RR time" "1-str" "4-str" "RR time"
for i in "${!names[@]}"; do
  printf '%-13s %9s %9s %8s | %6s %6s %7s | %6s %6s %7s\n' "${names[$i]}" "${one[$i]}" "${four[$i]}" "${rr[$i]}" \
    "$(ratio "${one[$i]}" "${one[0]}")" "$(ratio "${four[$i]}" "${four[0]}")" "$(ratio "${rr[$i]}" "${rr[0]}")" \
    "$(ratio "${one[$i]}" "${one[3]}")" "$(ratio "${four[$i]}" "${four[3]}")" "$(ratio "${rr[$i]}" "${rr[3]}")"
done
echo "(throughput ratios: higher is better; RR time ratios: lower is better)"
printf '\n%-13s %18s %9s\n' "path" "relay CPU s per GB" "vs socat"
for i in 1 2 3 4; do
  printf '%-13s %18s %9s\n' "${names[$i]}" "${cpu[$i]}" "$(ratio "${cpu[$i]}" "${cpu[3]}")"
done
echo "(the one-stream run; lower is better)"

if [ -n "$json" ]; then
  {
    echo "{\"seconds\": $seconds, \"rr_count\": $rr_count, \"congestion_control\": \"$host_cc\", \"paths\": ["
    for i in "${!names[@]}"; do
      sep=","; [ "$i" -eq $((${#names[@]} - 1)) ] && sep=""
      echo "  {\"path\": \"${names[$i]}\", \"gbits_1\": ${one[$i]}, \"gbits_4\": ${four[$i]}, \"rr_median_us\": ${rr[$i]}, \"relay_cpu_s_per_gb\": ${cpu[$i]}}$sep"
    done
    echo "]}"
  } > "$json"
fi

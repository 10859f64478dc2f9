#!/usr/bin/env bash
# The main job, from a fresh clone: installs what is missing, builds Fun, its VM image and the
# container images, serves those from a local registry (there is no internet), boots the VM
# (QEMU; TCG on this machine) on the first `fun` command, runs a container in it and prints
# what the container prints, shows a detached container's logs and exec, the status and the
# doctor's checks, then cleans up and stops the VM.
#
#   ci/demo.sh            uses the default instance in your FUN_HOME (or ~/.local/state/fun)
#   FUN_HOME=/tmp/x ci/demo.sh
#
# The registry listens on 127.0.0.1:5000 (the VM reaches it as 10.0.2.2:5000); the port must be
# free.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S . -B build "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)"
bash images/build.sh --out build/images
bash linuxkit/build.sh --out build/linuxkit --guestd build/bin/fun-guestd --images build/images

bin=build/bin
export FUN_IMAGE_DIR=$PWD/build/linuxkit
registry_dir=$(mktemp -d /tmp/fun-demo-registry.XXXXXX)
cleanup() {
  "$bin/fun" rm -f demo-web >/dev/null 2>&1 || true
  "$bin/fun-vmctl" stop >/dev/null 2>&1 || true
  bash images/registry.sh stop --dir "$registry_dir" >/dev/null 2>&1 || true
  rm -rf "$registry_dir"
}
trap cleanup EXIT

echo
echo "== $("$bin/fun-vmctl" version)"
echo
echo "== the local registry (busybox and Fun's pause image, built offline)"
bash images/registry.sh start --dir "$registry_dir" --port 5000 --images build/images
image=10.0.2.2:5000/fun/busybox:latest
echo
echo "== fun run --rm $image echo ...   (the first command boots the VM)"
"$bin/fun" run --rm "$image" sh -c 'echo "hello from a container in the Fun VM ($(uname -sr))"'
echo
echo "== a detached container with a published port: fun run -d -p, logs, exec, ps, curl"
# A free host port for the demo (8080 may be taken on this machine).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin/fun" run -d --name demo-web -p "127.0.0.1:$port:80" "$image" sh -c \
  'mkdir /www && echo "<h1>served by busybox httpd in the VM</h1>" > /www/index.html &&
   echo serving && exec httpd -f -p 80 -h /www'
sleep 1
"$bin/fun" logs demo-web
"$bin/fun" exec demo-web wget -qO- http://127.0.0.1:80/
"$bin/fun" ps
echo "-- curl http://127.0.0.1:$port/ (from the host, through fun-hostd and the agent)"
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$port/" && break; sleep 0.2; done
"$bin/fun" rm -f demo-web
echo
echo "== a host folder in a container: fun run -v (your home is shared into the VM over 9P)"
share=$(mktemp -d "$HOME/fun-demo-XXXXXX")
echo "written on the host" > "$share/hello.txt"
"$bin/fun" run --rm -v "$share:/data" "$image" sh -c \
  'cat /data/hello.txt && echo "written in the container" > /data/reply.txt'
echo "-- on the host: $(cat "$share/reply.txt")"
rm -rf "$share"
echo
echo "== fun-vmctl status"
"$bin/fun-vmctl" status
echo
echo "== fun-doctor"
"$bin/fun-doctor" || true
echo
echo "== stopping the VM (fun-vmctl stop)"
"$bin/fun-vmctl" stop
echo
echo "== not built yet: the HyperKit backend (macOS), and the open issues' left lists in docs/next.md"

#!/usr/bin/env bash
# The main job, from a fresh clone: installs what is missing, builds Fun and its VM image, boots
# the VM (QEMU; TCG on this machine) until containerd answers CRI, shows its status and the
# doctor's checks, and stops it. Running a container (`fun run`) is not built yet: the demo
# says so at the end rather than pretend.
#
#   ci/demo.sh            uses the default instance in your FUN_HOME (or ~/.local/state/fun)
#   FUN_HOME=/tmp/x ci/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S . -B build "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)"
bash linuxkit/build.sh --out build/linuxkit --guestd build/bin/fun-guestd

bin=build/bin
echo
echo "== $("$bin/fun-vmctl" version)"
echo
echo "== booting the VM (fun-vmctl start)"
"$bin/fun-vmctl" start --image-dir build/linuxkit
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
echo "== not built yet: running a container ('fun run' over CRI, with images from a local"
echo "   registry), shared folders over 9P in the VM, published ports (the open issues, in order)"

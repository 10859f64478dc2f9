#!/usr/bin/env bash
# The main job, from a fresh clone: installs what is missing, builds, then boots the VM and runs
# a container in it. Until the VM exists, it runs every part that exists and says what is
# missing, so a newcomer sees exactly where the project stands.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S . -B build "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)"

bin=build/bin
echo
echo "== Fun $("$bin/fun-vmctl" version)"
echo
echo "== where Fun keeps state and logs"
"$bin/fun-vmctl" paths
echo
echo "== the default instance's configuration"
"$bin/fun-vmctl" config
echo
echo "== not built yet (the project's open issues, in order):"
echo "   - the VM: guest image, QEMU backend, fun-hostd, 'fun-vmctl start' (boot to containerd)"
echo "   - containers: 'fun run' through CRI, with images from a local registry"
echo "   - shared folders over 9P, published ports, fun-doctor"
echo "ci/demo.sh: ran everything that exists"

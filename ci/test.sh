#!/usr/bin/env bash
# Runs every test of Fun: installs what is missing, builds, builds the VM image, runs ctest
# (unit tests, tests against a real containerd and diod's clients, and the harness, which boots
# real VMs under QEMU), then builds the unit tests and fuzz targets again with clang + ASan +
# UBSan and runs them (fuzz targets replay their seed corpora). Exit status is non-zero if
# anything fails.
#
#   ci/test.sh              everything
#   FUN_SKIP_SANITIZE=1 ci/test.sh   only the normal build (quicker, for local iteration)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash ci/setup.sh

jobs=${FUN_JOBS:-$(nproc)}
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)

step() { printf '\n==== %s\n' "$*"; }

step "build (g++, warnings as errors)"
cmake -S . -B build "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFUN_WERROR=ON \
  -DFUN_BUILD_TESTS=ON -DFUN_BUILD_BENCHMARKS=ON
cmake --build build -j "$jobs"

step "VM image (linuxkit/build.sh: Debian's kernel, busybox, containerd, runc, fun-guestd)"
bash linuxkit/build.sh --out build/linuxkit --guestd build/bin/fun-guestd --images build/images

status=0
rm -rf build/harness-report build/Testing/Temporary/LastTestsFailed.log \
  build-asan/Testing/Temporary/LastTestsFailed.log
step "tests (ctest, normal build: unit, containerd, interop, harness with a real VM)"
ctest --test-dir build --output-on-failure -j "$jobs" || status=1

if [ "${FUN_SKIP_SANITIZE:-0}" != 1 ]; then
  step "build (clang, ASan + UBSan, fuzz targets)"
  cmake -S . -B build-asan "${gen[@]}" -DCMAKE_BUILD_TYPE=Debug -DFUN_WERROR=ON \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DFUN_SANITIZE="address;undefined" -DFUN_BUILD_FUZZERS=ON -DFUN_BUILD_BENCHMARKS=OFF
  cmake --build build-asan -j "$jobs"
  step "tests (ctest, ASan + UBSan: unit tests and fuzz corpus replay)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j "$jobs" -L 'unit|fuzz' || status=1
fi

step "result"
# What failed, repeated here so that the tail of a long log names it.
for dir in build build-asan; do
  failed_log=$dir/Testing/Temporary/LastTestsFailed.log
  if [ -s "$failed_log" ]; then
    echo "failed in $dir:"
    sed 's/^/  /' "$failed_log"
  fi
done
report=build/harness-report/vm_lifecycle.json
if [ -f "$report" ]; then
  python3 - "$report" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))
bad = [s for s in r["steps"] if not s["ok"]]
print(f"harness: {len(r['steps']) - len(bad)} steps passed, {len(bad)} failed, {r['seconds']:.0f} s")
for s in bad:
    print(f"  FAILED {s['name']} ({s['seconds']:.1f} s): {s['message'][:500]}")
# The first failure's console and hostd tails: later steps only say they did not run.
first = next((s for s in bad if s.get("attachments")), None)
if first:
    print(f"--- what the instance logged when {first['name']} failed")
    print(first["attachments"])
PY
fi
if [ $status = 0 ]; then echo "ci/test.sh: all tests passed"; else echo "ci/test.sh: FAILED"; fi
exit $status

#!/usr/bin/env bash
# Installs every Debian package Fun needs to build, test and run.
# Idempotent and fast when everything is present: it asks dpkg first and only calls
# apt-get for what is missing. Run as root (or with sudo available).
#
#   ci/setup.sh            install what is missing
#   ci/setup.sh --check    list what is missing, install nothing (exit 1 if anything is)
set -euo pipefail

packages=(
  # toolchain
  cmake ninja-build g++ clang clang-format clang-tidy libclang-rt-14-dev lld pkg-config git
  # libraries
  libgtest-dev libgmock-dev libbenchmark-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libboost-dev libboost-filesystem-dev libfmt-dev nlohmann-json3-dev
  # containerd's API protos (content service: pull progress) and the gogo.proto they import
  golang-github-containerd-containerd-dev golang-github-gogo-protobuf-dev
  # the real peers the tests start
  qemu-system-x86 qemu-utils containerd runc containernetworking-plugins
  docker-registry skopeo umoci busybox-static diod socat iperf3 haproxy curl
  # FUN0016's real DNS server (tools/doctor/real_env_test.cc; dnsmasq-base runs no service)
  dnsmasq-base
  # guest image assembly (linuxkit/build.sh)
  cpio zstd lz4 gzip e2fsprogs kmod xz-utils binutils
  # scripts in perf/ and ci/
  python3
)

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  "") ;;
  *) echo "ci/setup.sh: unknown argument '$1' (use no argument, or --check)" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "ci/setup.sh: all ${#packages[@]} packages present"
  exit 0
fi
if [ $check_only = 1 ]; then
  echo "ci/setup.sh: missing: ${missing[*]}"
  exit 1
fi

sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "ci/setup.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi

echo "ci/setup.sh: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Only refresh the lists when they are missing or older than a day, or an install fails.
lists_age=$(( $(date +%s) - $(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo 0) ))
if [ ! -e /var/lib/apt/lists/lock ] || [ $lists_age -gt 86400 ] || \
   ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
  $sudo apt-get update -q
fi
if ! $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"; then
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# containerd's Debian package enables its own service; tests start their own instances.
if command -v systemctl >/dev/null && systemctl is-active --quiet containerd 2>/dev/null; then
  $sudo systemctl disable --now containerd >/dev/null 2>&1 || true
fi
echo "ci/setup.sh: done"

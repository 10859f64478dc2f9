#!/usr/bin/env bash
# Builds Fun's container images offline, as OCI image layouts (linux/amd64), from what Debian
# ships and from images/pause/pause.c:
#
#   <out>/busybox/   OCI layout, tag "latest": /bin/busybox (Debian's busybox-static) and a
#                    symlink per applet at its usual path (/bin/sh, /bin/ls, /usr/bin/wget,
#                    /usr/sbin/httpd, ...), a minimal /etc/passwd and /etc/group; Cmd ["sh"]
#   <out>/pause/     OCI layout, tag "1.0": /pause (images/pause/pause.c, gcc -static -Os,
#                    stripped); Entrypoint ["/pause"]
#   <out>/echo/      OCI layout, tag "1.0": /echo (images/echo/echo.c, likewise), a TCP and
#                    UDP echo server without a fork per connection; Entrypoint ["/echo"]
#   <out>/images.txt one line per image: "<layout dir> <tag> <repository>:<tag>", what
#                    images/registry.sh pushes (fun/busybox:latest, fun/pause:1.0, fun/echo:1.0)
#
# Each image is built with umoci (init, new, insert, config, gc) in a work dir and copied into
# <out> with skopeo (a clean layout, checked on the way). An image is rebuilt only when one of
# its inputs changed (this script, the busybox binary, pause.c, the compiler's version); the
# hash of the inputs is kept in <out>/<image>/.inputs. Concurrent runs on one <out> wait for
# each other (flock). Sizes are printed at the end. Root is not needed.
#
#   images/build.sh [--out DIR] [--busybox PATH] [--force]
#
# Needs: umoci, skopeo, busybox-static, gcc with a static libc (libc6-dev), sha256sum, flock.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
self="$here/build.sh"

out="$repo/build/images"
busybox=""
force=0

die() { echo "images/build.sh: error: $*" >&2; exit 1; }
note() { echo "images/build.sh: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
    --busybox) [ $# -ge 2 ] || die "--busybox needs a path"; busybox=$2; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$self" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

for tool in umoci skopeo gcc sha256sum flock; do
  command -v "$tool" >/dev/null || die "$tool not found (run ci/setup.sh)"
done
if [ -z "$busybox" ]; then
  for b in /bin/busybox /usr/bin/busybox; do [ -x "$b" ] && { busybox=$b; break; }; done
  [ -n "$busybox" ] || die "busybox not found (apt-get install busybox-static)"
fi
# Debian's busybox package (dynamic) would not run in an image without its libc.
if readelf -l "$busybox" 2>/dev/null | grep -q 'Requesting program interpreter'; then
  die "$busybox is dynamically linked; install busybox-static (or pass --busybox)"
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
current_work=""
trap '[ -z "$current_work" ] || rm -rf "$current_work"' EXIT
exec 9>"$out/.lock"
flock 9

sha() { sha256sum "$@" | cut -d' ' -f1; }
human() { numfmt --to=iec --suffix=B "$1" 2>/dev/null || echo "$1 B"; }
# With --rootless, umoci records files as owned by root although we are not.
rootless=()
[ "$(id -u)" = 0 ] || rootless=(--rootless)
# Fixed timestamps in the image config and history: the same inputs give the same config.
created="1970-01-01T00:00:00Z"

# build_image NAME TAG INPUT_HASH POPULATE_FN CONFIG_ARGS...
#   POPULATE_FN ROOTFS fills the staging root; CONFIG_ARGS go to `umoci config`.
build_image() {
  local name=$1 tag=$2 inputs=$3 populate=$4
  shift 4
  local dest="$out/$name"
  if [ $force = 0 ] && [ -f "$dest/.inputs" ] && [ "$(cat "$dest/.inputs")" = "$inputs" ] &&
     [ -f "$dest/index.json" ]; then
    note "$name:$tag up to date"
    return 0
  fi
  local t0 work
  t0=$(date +%s%N)
  work=$(mktemp -d "$out/.work-$name.XXXXXX")
  current_work=$work
  mkdir -p "$work/rootfs"
  "$populate" "$work/rootfs"
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:$tag"
  umoci insert "${rootless[@]}" --image "$work/oci:$tag" \
    --history.created "$created" --history.created_by "images/build.sh ($name)" \
    "$work/rootfs" /
  umoci config --image "$work/oci:$tag" --os linux --architecture amd64 \
    --created "$created" --history.created "$created" \
    --history.created_by "images/build.sh ($name config)" "$@"
  umoci gc --layout "$work/oci"
  rm -rf "$dest"
  skopeo copy --quiet "oci:$work/oci:$tag" "oci:$dest:$tag"
  echo "$inputs" > "$dest/.inputs"
  rm -rf "$work"
  current_work=""
  note "$name:$tag built in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}

# --- busybox ------------------------------------------------------------------------------------
populate_busybox() {
  local root=$1 applet
  mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" \
    "$root/root" "$root/tmp" "$root/var/www" "$root/proc" "$root/sys" "$root/dev"
  chmod 1777 "$root/tmp"
  chmod 0700 "$root/root"
  install -m 0755 "$busybox" "$root/bin/busybox"
  # Every applet this busybox has, at the path busybox itself lists (bin/sh, usr/bin/wget, ...).
  while read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    mkdir -p "$root/$(dirname "$applet")"
    ln -sf /bin/busybox "$root/$applet"
  done < <("$busybox" --list-full)
  local have
  have=$("$busybox" --list)
  for applet in sh ls cat echo sleep httpd nc wget id env true false; do
    grep -qx "$applet" <<<"$have" || die "$busybox has no applet $applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    > "$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
}

# --- pause --------------------------------------------------------------------------------------
populate_pause() {
  local root=$1
  gcc -static -Os -s -Wall -Wextra -Werror -o "$root/pause" "$here/pause/pause.c"
  "$root/pause" --version >/dev/null || die "the pause binary does not run"
}

# --- echo ---------------------------------------------------------------------------------------
populate_echo() {
  local root=$1
  gcc -static -Os -s -Wall -Wextra -Werror -o "$root/echo" "$here/echo/echo.c"
  "$root/echo" --version >/dev/null || die "the echo binary does not run"
}

cc_version=$(gcc --version | head -1)
busybox_inputs=$(printf '%s\n' "script $(sha "$self")" "busybox $(sha "$busybox")" | sha)
pause_inputs=$(printf '%s\n' "script $(sha "$self")" "pause.c $(sha "$here/pause/pause.c")" \
  "cc $cc_version" | sha)

build_image busybox latest "$busybox_inputs" populate_busybox \
  --config.cmd sh --config.env "PATH=/usr/sbin:/usr/bin:/sbin:/bin" --config.workingdir /
build_image pause 1.0 "$pause_inputs" populate_pause \
  --config.entrypoint /pause --config.workingdir /
echo_inputs=$(printf '%s\n' "script $(sha "$self")" "echo.c $(sha "$here/echo/echo.c")" \
  "cc $cc_version" | sha)
build_image echo 1.0 "$echo_inputs" populate_echo \
  --config.entrypoint /echo --config.workingdir /

cat > "$out/images.txt" <<EOF
busybox latest fun/busybox:latest
pause 1.0 fun/pause:1.0
echo 1.0 fun/echo:1.0
EOF

# --- sizes --------------------------------------------------------------------------------------
# The compressed size of an image: its config, manifest and layers (what a registry stores).
for name in busybox pause echo; do
  bytes=$(find "$out/$name/blobs" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  layer=$(find "$out/$name/blobs" -type f -printf '%s\n' | sort -n | tail -1)
  note "$name: $(human "$bytes") in $out/$name (largest blob, the layer: $(human "$layer"))"
done

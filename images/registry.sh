#!/usr/bin/env bash
# A local registry for Fun's images, with no internet: Debian's docker-registry on
# 127.0.0.1:<port>, plain HTTP, no auth, deletes enabled, its storage in a dir of the caller's,
# seeded with the images images/build.sh built (fun/busybox:latest, fun/pause:1.0).
#
#   images/registry.sh start --dir DIR --port PORT [--images DIR]
#       writes DIR/config.yml, starts docker-registry in the background (pid in
#       DIR/registry.pid, log in DIR/registry.log), waits until /v2/ answers, then pushes the
#       images of --images (a build.sh output dir) if given. Prints 127.0.0.1:PORT.
#   images/registry.sh run --dir DIR --port PORT
#       the same config, but docker-registry runs in the foreground (exec: same pid), for a
#       caller that supervises it (the test fixture lib/cri/testing/registry_fixture.h)
#   images/registry.sh wait --port PORT [--timeout SECONDS]     until /v2/ answers (default 20 s)
#   images/registry.sh push --port PORT --images DIR            pushes every image of DIR/images.txt
#   images/registry.sh stop --dir DIR                           stops what `start` started
#
# Repository names are stable (127.0.0.1:PORT/fun/busybox:latest, .../fun/pause:1.0); only the
# port changes, so tests can use a free one. containerd reaches it over plain HTTP through a
# hosts.toml (see images/README.md); from the VM, QEMU's user-mode network maps the host's
# loopback to 10.0.2.2.
#
# Needs: docker-registry, skopeo, curl.
set -euo pipefail

die() { echo "images/registry.sh: error: $*" >&2; exit 1; }
note() { echo "images/registry.sh: $*" >&2; }

[ $# -ge 1 ] || die "usage: images/registry.sh start|run|wait|push|stop [options] (see the header)"
cmd=$1
shift
dir="" port="" images="" timeout=20
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) [ $# -ge 2 ] || die "--dir needs a directory"; dir=$2; shift 2 ;;
    --port) [ $# -ge 2 ] || die "--port needs a number"; port=$2; shift 2 ;;
    --images) [ $# -ge 2 ] || die "--images needs a directory"; images=$2; shift 2 ;;
    --timeout) [ $# -ge 2 ] || die "--timeout needs seconds"; timeout=$2; shift 2 ;;
    *) die "unknown argument '$1'" ;;
  esac
done

need_port() {
  [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] ||
    die "--port must be a number from 1 to 65535 (got '${port}')"
}
need_dir() {
  [ -n "$dir" ] || die "--dir is required"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
}

write_config() {
  mkdir -p "$dir/storage"
  cat > "$dir/config.yml" <<EOF
# Written by images/registry.sh: a local registry for Fun's tests and demo.
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  # Signs upload state; one registry per config, so any per-run value will do.
  secret: fun-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
EOF
}

wait_up() {
  local deadline=$(( $(date +%s) + timeout ))
  until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/v2/" 2>/dev/null; do
    if [ -n "${1:-}" ] && ! kill -0 "$1" 2>/dev/null; then
      die "docker-registry exited before 127.0.0.1:$port/v2/ answered; its log:
$(tail -n 20 "$dir/registry.log" 2>/dev/null)"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || die "127.0.0.1:$port/v2/ did not answer within ${timeout} s"
    sleep 0.05
  done
}

push() {
  [ -f "$images/images.txt" ] || die "$images/images.txt not found: run images/build.sh --out $images"
  local layout tag name
  while read -r layout tag name; do
    [ -n "$layout" ] || continue
    skopeo copy --quiet --insecure-policy --dest-tls-verify=false \
      "oci:$images/$layout:$tag" "docker://127.0.0.1:$port/$name"
    note "pushed 127.0.0.1:$port/$name"
  done < "$images/images.txt"
}

case "$cmd" in
  run)
    need_dir; need_port
    command -v docker-registry >/dev/null || die "docker-registry not found (run ci/setup.sh)"
    write_config
    exec docker-registry serve "$dir/config.yml"
    ;;
  start)
    need_dir; need_port
    command -v docker-registry >/dev/null || die "docker-registry not found (run ci/setup.sh)"
    if [ -f "$dir/registry.pid" ] && kill -0 "$(cat "$dir/registry.pid")" 2>/dev/null; then
      die "a registry of $dir runs already (pid $(cat "$dir/registry.pid")); stop it first"
    fi
    write_config
    setsid docker-registry serve "$dir/config.yml" >>"$dir/registry.log" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$dir/registry.pid"
    wait_up "$pid"
    [ -z "$images" ] || push
    echo "127.0.0.1:$port"
    ;;
  wait)
    need_port
    wait_up
    ;;
  push)
    need_port
    [ -n "$images" ] || die "--images is required"
    push
    ;;
  stop)
    need_dir
    [ -f "$dir/registry.pid" ] || { note "no registry.pid in $dir: nothing to stop"; exit 0; }
    pid=$(cat "$dir/registry.pid")
    # Only the registry this dir's config started: a reused pid is never ours to kill.
    if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "$dir/config.yml"; then
      kill -TERM "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      note "stopped pid $pid"
    fi
    rm -f "$dir/registry.pid"
    ;;
  *) die "unknown command '$cmd' (start, run, wait, push, stop)" ;;
esac

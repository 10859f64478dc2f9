#!/usr/bin/env bash
# Builds Fun's guest VM offline from Debian packages, in LinuxKit's kernel+initrd layout:
#
#   <out>/fun-kernel       the kernel (Debian's bzImage, as LinuxKit ships it)
#   <out>/fun-kernel.pvh   the same kernel uncompressed (ELF vmlinux with a PVH entry note):
#                          QEMU boots it directly (-kernel) and skips the XZ decompression
#                          that costs seconds under TCG. Not part of LinuxKit's layout.
#   <out>/fun-initrd.img   newc cpio: busybox, containerd, runc, CNI plugins, iptables,
#                          mke2fs, the kernel modules the VM needs, guest/init as /init
#   <out>/fun-cmdline      the kernel command line
#   <out>/fun-system.img   read-only ext4 with the big binaries (containerd, its shim, runc, the
#                          CNI plugins: ~75 MB), attached as a virtio disk with serial
#                          "fun-system" and mounted by /init on /usr/lib/fun/system; the initrd
#                          keeps symlinks at their usual paths. The kernel copies every initrd
#                          byte before /init runs (~1 s for 93 MB under TCG) and keeps it in
#                          RAM; from the disk only the pages read are read. fun-cmdline then
#                          says fun.system=fun-system, which is how fun-hostd and fun-doctor
#                          know the image needs the disk. --no-system-disk: all in the initrd.
#
# Nothing is installed into the host: the packages are fetched with `apt-get download` into
# the cache dir and unpacked with `dpkg-deb -x`. A rebuild happens only when an input
# changed (the .deb files, guest/init, guest/rootfs/, linuxkit/containerd-config.toml, the
# fun-guestd binary, the options, this script); the hash of the inputs is kept in
# <out>/.inputs.
#
#   linuxkit/build.sh [--out DIR] [--cache DIR] [--guestd PATH] [--compress none|gzip|lz4|zstd]
#                     [--with-ctr] [--images DIR] [--no-system-disk] [--force]
#
# --images DIR: images/build.sh's output; its pause layout ships in the image under
# /usr/share/fun/images/fun/pause, where fun-guestd serves it as a read-only registry on the
# VM's 127.0.0.1:5001 (containerd's sandbox_image), so pods need no registry on the host.
#
# Needs: apt-get, dpkg-deb, cpio, depmod + modprobe (kmod), xz, sha256sum, readelf or
# objdump (binutils); lz4 / zstd / gzip for the matching --compress. Root is not needed.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
self="$here/build.sh"

out="$repo/build/linuxkit"
cache="$repo/.cache/linuxkit"
guestd=""
images=""
compress="none"   # measured fastest under TCG; see linuxkit/README.md
with_ctr=0         # ctr is 22 MB of initrd that nothing in the VM runs; --with-ctr for debugging
system_disk=1      # the big binaries on fun-system.img (see above)
force=0

die() { echo "linuxkit/build.sh: error: $*" >&2; exit 1; }
note() { echo "linuxkit/build.sh: $*" >&2; }
# Any command that fails without its own message still says where.
set -E
trap 'die "line $LINENO: \"$BASH_COMMAND\" failed"' ERR

while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
    --cache) [ $# -ge 2 ] || die "--cache needs a directory"; cache=$2; shift 2 ;;
    --guestd) [ $# -ge 2 ] || die "--guestd needs a path"; guestd=$2; shift 2 ;;
    --compress) [ $# -ge 2 ] || die "--compress needs none|gzip|lz4|zstd"; compress=$2; shift 2 ;;
    --with-ctr) with_ctr=1; shift ;;
    --images) [ $# -ge 2 ] || die "--images needs a directory"; images=$2; shift 2 ;;
    --no-ctr) with_ctr=0; shift ;;
    --no-system-disk) system_disk=0; shift ;;  # the default since session 2; kept for old command lines
    --force) force=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$self" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$compress" in none|gzip|lz4|zstd) ;; *) die "--compress must be none, gzip, lz4 or zstd, not '$compress'" ;; esac
if [ -n "$images" ]; then
  [ -f "$images/pause/index.json" ] || die "--images $images: no pause/index.json (run images/build.sh --out $images)"
  images=$(cd "$images" && pwd)
fi
if [ -n "$guestd" ]; then
  [ -f "$guestd" ] || die "--guestd $guestd: no such file"
  guestd=$(cd "$(dirname "$guestd")" && pwd)/$(basename "$guestd")
fi
for tool in apt-get apt-cache dpkg-deb cpio depmod modprobe xz sha256sum find strip mke2fs debugfs; do
  command -v "$tool" >/dev/null || die "'$tool' not found (run ci/setup.sh)"
done
case "$compress" in
  gzip) command -v gzip >/dev/null || die "'gzip' not found" ;;
  lz4) command -v lz4 >/dev/null || die "'lz4' not found (apt-get install lz4)" ;;
  zstd) command -v zstd >/dev/null || die "'zstd' not found (apt-get install zstd)" ;;
esac
command -v readelf >/dev/null || command -v objdump >/dev/null ||
  die "'readelf' not found (apt-get install binutils)"

start=$(date +%s.%N)
mkdir -p "$out" "$cache"
out=$(cd "$out" && pwd)
cache=$(cd "$cache" && pwd)

# ---------------------------------------------------------------------------------------
# What goes into the image.

# Packages whose files are used; their library dependencies are added below.
packages=(busybox-static containerd runc containernetworking-plugins e2fsprogs iptables)
# CNI plugins shipped (the default conflist uses bridge + host-local; portmap ships for configs
# that want hostPorts; containerd's CRI runs loopback itself).
cni_plugins=(bridge host-local loopback portmap)
# Kernel modules, loaded by /init in these groups (dependencies are resolved by modprobe from
# the modules.dep that depmod writes here).
# "disk" and "fs": what containerd's start waits for, the two groups loaded in parallel:
# virtio-rng first (mkfs.ext4 and containerd block in getrandom() until the kernel's CRNG is
# seeded, which takes seconds under TCG without it) and the disk; the file systems.
modules_disk=(virtio_pci virtio_mmio virtio_rng virtio_blk)
modules_fs=(ext4 crc32c_generic overlay)
# "boot": loaded while containerd starts; the marker line waits for them.
modules_boot=(
  virtio_net virtio_console
  qemu_fw_cfg vmw_vsock_virtio_transport
  button evdev
)
# "net": CNI bridge + portmap and the 9P client; loaded in the background (nothing needs them
# before the first pod or share).
modules_net=(
  bridge br_netfilter veth
  nf_conntrack nf_nat nf_conntrack_netlink
  ip_tables iptable_filter iptable_nat iptable_mangle
  xt_MASQUERADE xt_nat xt_comment xt_mark xt_addrtype xt_multiport xt_conntrack xt_tcpudp
  9pnet_virtio 9pnet_fd 9p
)
# Kept on the command line only where measured to help under TCG (see linuxkit/README.md).
cmdline="console=ttyS0 quiet panic=1 cryptomgr.notests tsc=reliable"
# Built-in initcalls that only self-test or set up what the VM never uses, slow under TCG
# (initcall_debug, loaded host): the SP800-108 KDF self-test 0.30 s, kprobe tracing 0.15 s,
# encrypted keys 0.05 s, zswap 0.02 s, BPF test-run kfuncs 0.01 s. Measured: kernel phase
# 2.27 -> 2.06 s, wall 0.93x (perf/results-boot_time-session7-initcalls.json).
cmdline="$cmdline initcall_blacklist=crypto_kdf108_init,init_kprobe_trace,init_encrypted,init_zswap,bpf_prog_test_run_init"
# The system disk's virtio serial (QEMU -device virtio-blk-pci,serial=...); /init finds it by it.
system_serial=fun-system

# ---------------------------------------------------------------------------------------
# 1. Resolve the package set (kernel: the package linux-image-amd64 depends on; libraries:
#    the lib* dependencies, transitively) and fetch the .deb files into the cache. The
#    resolution is kept in <cache>/.resolved until apt's package lists change.

apt_depends() {  # prints the Depends/PreDepends of the packages given, one a line
  apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
    --no-enhances "$@" 2>/dev/null | awk '$1 ~ /^(Pre)?Depends:$/ && $2 !~ /^</ {print $2}' | sort -u
}

updated=0
apt_update_once() {
  [ $updated = 0 ] || return 1
  updated=1
  note "refreshing the package lists (apt-get update)"
  apt-get update -q >/dev/null 2>&1 || die "apt-get update failed (are Debian's apt repositories reachable?)"
}

lists_key() {
  { echo "${packages[*]}"; stat -c '%n %Y %s' /var/lib/apt/lists/*Packages* 2>/dev/null || true; } |
    sha256sum | cut -d' ' -f1
}

resolve_err=""
resolve() {  # sets $uris: one "'URI' file size SHA256:sum" line per package
  local key kernel_pkg level=() next=() p empty
  key=$(lists_key)
  if [ -f "$cache/.resolved" ] && [ "$(head -1 "$cache/.resolved")" = "$key" ]; then
    uris=$(tail -n +2 "$cache/.resolved")
    return 0
  fi
  kernel_pkg=$(apt_depends linux-image-amd64 | grep -m1 '^linux-image-' || true)
  if [ -z "$kernel_pkg" ]; then
    resolve_err="cannot resolve the kernel package that linux-image-amd64 depends on"
    return 1
  fi
  local -A seen=()
  all_pkgs=("$kernel_pkg" "${packages[@]}")
  for p in "${all_pkgs[@]}"; do seen[$p]=1; done
  level=("${all_pkgs[@]}")
  while [ ${#level[@]} -gt 0 ]; do
    next=()
    for p in $(apt_depends "${level[@]}" | grep '^lib' || true); do
      [ -z "${seen[$p]:-}" ] || continue
      seen[$p]=1
      next+=("$p")
      all_pkgs+=("$p")
    done
    level=("${next[@]}")
  done
  # (from an empty directory: apt-get prints nothing for files already in the current one)
  empty=$(mktemp -d)
  if ! uris=$(cd "$empty" && apt-get download --print-uris "${all_pkgs[@]}" 2>"$cache/.apt.err"); then
    rmdir "$empty"
    resolve_err="apt-get cannot resolve the packages: $(grep -m1 -E '^E:' "$cache/.apt.err" || tail -1 "$cache/.apt.err")"
    return 1
  fi
  rmdir "$empty"
  if [ "$(echo "$uris" | grep -c . || true)" -ne ${#all_pkgs[@]} ]; then
    resolve_err="apt-get named $(echo "$uris" | grep -c . || true) files for ${#all_pkgs[@]} packages (${all_pkgs[*]})"
    return 1
  fi
  { echo "$key"; echo "$uris"; } > "$cache/.resolved"
}

# Verifies the cached .deb files against the SHA256 the lists name; downloads what is missing.
declare -A deb_of=()
deb_list=()
all_pkgs=()
fetch_err=""
fetch() {
  local file size sum pkg missing=() line f
  deb_list=(); all_pkgs=()
  while read -r _ file size sum; do
    [ -n "$file" ] || continue
    pkg=${file%%_*}
    all_pkgs+=("$pkg")
    deb_of[$pkg]="$cache/$file"
    deb_list+=("$file ${sum#SHA256:}")
    [ -f "$cache/$file" ] && [ "$(stat -c %s "$cache/$file")" = "$size" ] || missing+=("$pkg")
  done <<< "$uris"
  if [ ${#missing[@]} -gt 0 ]; then
    note "downloading ${#missing[@]} packages into $cache: ${missing[*]}"
    if ! (cd "$cache" && apt-get download -q "${missing[@]}" >/dev/null 2>"$cache/.apt.err"); then
      fetch_err="apt-get download failed: $(grep -m1 -E '^E:' "$cache/.apt.err" || tail -1 "$cache/.apt.err")"
      return 1
    fi
  fi
  for line in "${deb_list[@]}"; do
    f=${line% *}
    if [ ! -f "$cache/$f" ] || [ "$(sha256sum < "$cache/$f" | cut -d' ' -f1)" != "${line#* }" ]; then
      rm -f "$cache/$f"
      fetch_err="$cache/$f: SHA256 differs from the package lists (removed; run again)"
      return 1
    fi
  done
}

if ! { resolve && fetch; }; then
  # The lists may be missing or stale (a newer version replaced the one they name): refresh
  # them once and retry.
  note "${resolve_err:-$fetch_err}"
  resolve_err=""; fetch_err=""
  rm -f "$cache/.resolved"
  apt_update_once || true
  { resolve && fetch; } || die "${resolve_err:-$fetch_err}"
fi
rm -f "$cache/.apt.err"
# Older versions of the packages are of no further use.
for f in "$cache"/*.deb; do
  [ -e "$f" ] || continue
  printf '%s\n' "${deb_list[@]}" | grep -q -F "$(basename "$f") " || rm -f "$f"
done
kernel_pkg=$(printf '%s\n' "${all_pkgs[@]}" | grep -m1 '^linux-image-') || die "no linux-image package resolved"

# ---------------------------------------------------------------------------------------
# 2. The input hash: skip the build when nothing changed.

inputs_manifest() {
  echo "options compress=$compress ctr=$with_ctr system_disk=$system_disk"
  printf 'deb %s\n' "${deb_list[@]}" | sort
  for f in "$self" "$repo/guest/init" "$here/containerd-config.toml"; do
    [ -f "$f" ] || die "missing input $f"
    echo "file ${f#"$repo"/} $(sha256sum < "$f" | cut -d' ' -f1)"
  done
  if [ -d "$repo/guest/rootfs" ]; then
    (cd "$repo/guest/rootfs" && find . \( -type f -o -type l \) | LC_ALL=C sort | while read -r f; do
      if [ -L "$f" ]; then echo "rootfs $f -> $(readlink "$f")"
      else echo "rootfs $f $(stat -c %a "$f") $(sha256sum < "$f" | cut -d' ' -f1)"; fi
    done)
  fi
  if [ -n "$guestd" ]; then echo "guestd $(sha256sum < "$guestd" | cut -d' ' -f1)"; fi
  if [ -n "$images" ]; then
    (cd "$images/pause" && find . -type f | LC_ALL=C sort | while read -r f; do
      echo "image pause $f $(sha256sum < "$f" | cut -d' ' -f1)"; done)
  fi
}
manifest=$(inputs_manifest)
hash=$(echo "$manifest" | sha256sum | cut -d' ' -f1)

outputs=(fun-kernel fun-kernel.pvh fun-initrd.img fun-cmdline)
[ $system_disk = 0 ] || outputs+=(fun-system.img)
print_sizes() {
  for f in "${outputs[@]}"; do
    printf '  %-16s %10s bytes  %s\n' "$f" "$(stat -c %s "$out/$f")" \
      "$(du -h --apparent-size "$out/$f" | cut -f1)"
  done
}
all_outputs() { for f in "${outputs[@]}"; do [ -f "$out/$f" ] || return 1; done; }
if [ $force = 0 ] && [ -f "$out/.inputs" ] && [ "$(head -1 "$out/.inputs")" = "$hash" ] && all_outputs; then
  echo "linuxkit/build.sh: up to date in $out (inputs $hash)"
  print_sizes
  exit 0
fi

# ---------------------------------------------------------------------------------------
# 3. Unpack and stage.

work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
x="$work/x"        # everything unpacked
r="$work/root"     # the initrd's tree
mkdir -p "$x" "$r"

for p in "${all_pkgs[@]}"; do
  dpkg-deb -x "${deb_of[$p]}" "$x" || die "dpkg-deb -x ${deb_of[$p]} failed"
done

# Merged-/usr layout, like Debian.
mkdir -p "$r"/usr/{bin,sbin,lib,lib64} "$r"/usr/lib/x86_64-linux-gnu "$r"/usr/lib/fun/system
ln -s usr/bin "$r/bin"; ln -s usr/sbin "$r/sbin"; ln -s usr/lib "$r/lib"; ln -s usr/lib64 "$r/lib64"
mkdir -p "$r"/{dev,proc,sys,run,tmp,root,mnt,etc,var/log,var/lib/containerd,var/lib/cni,newroot}
mkdir -p "$r"/etc/{containerd/certs.d,cni/net.d,fun}
chmod 1777 "$r/tmp"; chmod 700 "$r/root"

# Finds an unpacked file whether the package put it in / or /usr.
unpacked() {
  for d in "$x/usr/$1" "$x/$1" "$x/usr/${1#usr/}"; do
    if [ -e "$d" ]; then echo "$d"; return 0; fi
  done
  die "$1 not found in the unpacked packages"
}
install_bin() {  # install_bin SRC DEST (DEST relative to the root, under usr/)
  mkdir -p "$(dirname "$r/$2")"
  cp -L "$1" "$r/$2"
  chmod 755 "$r/$2"
}

# busybox: the binary and one symlink per applet (real binaries installed later win).
install_bin "$(unpacked bin/busybox)" usr/bin/busybox
"$r/usr/bin/busybox" --list-full | while read -r applet; do
  rel=${applet#/}
  case "$rel" in bin/*|sbin/*) rel="usr/$rel" ;; esac
  [ -e "$r/$rel" ] || [ -L "$r/$rel" ] || { mkdir -p "$(dirname "$r/$rel")"; ln -s /usr/bin/busybox "$r/$rel"; }
done

replace_bin() { rm -f "$r/$2"; install_bin "$1" "$2"; }
replace_bin "$(unpacked bin/containerd)" usr/bin/containerd
replace_bin "$(unpacked bin/containerd-shim-runc-v2)" usr/bin/containerd-shim-runc-v2
[ $with_ctr = 0 ] || replace_bin "$(unpacked bin/ctr)" usr/bin/ctr
replace_bin "$(unpacked sbin/runc)" usr/sbin/runc
ln -sf ../sbin/runc "$r/usr/bin/runc"
mkdir -p "$r/usr/lib/cni"
for p in "${cni_plugins[@]}"; do replace_bin "$(unpacked "lib/cni/$p")" "usr/lib/cni/$p"; done
replace_bin "$(unpacked sbin/mke2fs)" usr/sbin/mke2fs
for l in mkfs.ext4 mkfs.ext2 mke2fs; do [ "$l" = mke2fs ] || ln -sf mke2fs "$r/usr/sbin/$l"; done
cp "$x/etc/mke2fs.conf" "$r/etc/mke2fs.conf"
# iptables (legacy backend: x_tables modules; CNI's bridge and portmap exec iptables).
replace_bin "$(unpacked sbin/xtables-legacy-multi)" usr/sbin/xtables-legacy-multi
for l in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  rm -f "$r/usr/sbin/$l"; ln -s xtables-legacy-multi "$r/usr/sbin/$l"
done
mkdir -p "$r/usr/lib/x86_64-linux-gnu/xtables"
cp "$(unpacked lib/x86_64-linux-gnu/xtables)"/lib{xt,ipt,ip6t}_*.so "$r/usr/lib/x86_64-linux-gnu/xtables/"
if [ -n "$guestd" ]; then
  # A RelWithDebInfo build carries ~11 MB of debug info the VM never reads: unpacking it is
  # boot time. Strip the copy; the build tree keeps the symbols for gdb.
  replace_bin "$guestd" usr/bin/fun-guestd
  strip --strip-debug "$r/usr/bin/fun-guestd" || die "strip fun-guestd failed"
fi

# Shared libraries: the ELF NEEDED closure of every binary staged, taken from the unpacked
# packages (fun-guestd's from the host when the packages lack them: it was built there).
needed_of() {
  if command -v readelf >/dev/null; then
    readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' || true
  else
    objdump -p "$1" 2>/dev/null | awk '$1 == "NEEDED" {print $2}' || true
  fi
}
find_lib() {
  local d
  for d in "$x/usr/lib/x86_64-linux-gnu" "$x/lib/x86_64-linux-gnu" "$x/usr/lib64" "$x/lib64"; do
    [ -e "$d/$1" ] && { echo "$d/$1"; return 0; }
  done
  # Host fallback (fun-guestd's libstdc++ and friends).
  local h
  h=$(ldconfig -p 2>/dev/null | awk -v n="$1" '$1 == n && /x86-64/ {print $NF; exit}' || true)
  [ -n "$h" ] && [ -e "$h" ] && { note "library $1 taken from the host ($h)"; echo "$h"; return 0; }
  return 1
}
declare -A have_lib=()
libq=()
while IFS= read -r f; do
  head -c 4 "$f" 2>/dev/null | grep -q 'ELF' || continue
  while read -r l; do libq+=("$l"); done < <(needed_of "$f")
done < <(find "$r/usr" -type f)
while [ ${#libq[@]} -gt 0 ]; do
  l=${libq[0]}; libq=("${libq[@]:1}")
  [ -z "${have_lib[$l]:-}" ] || continue
  have_lib[$l]=1
  src=$(find_lib "$l") || die "shared library $l (needed by a staged binary) is in no unpacked package nor on the host"
  cp -L "$src" "$r/usr/lib/x86_64-linux-gnu/$l"
  while read -r l2; do libq+=("$l2"); done < <(needed_of "$src")
done
# The dynamic loader, at the path every binary names.
cp -L "$(find_lib ld-linux-x86-64.so.2)" "$r/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
ln -sf ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$r/usr/lib64/ld-linux-x86-64.so.2"

# Kernel, its uncompressed twin for PVH boot, and the modules.
kver=$(find "$x/lib/modules" "$x/usr/lib/modules" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | head -1 || true)
[ -n "$kver" ] || die "no /lib/modules/<version> in $kernel_pkg"
moddir="$x/lib/modules/$kver"; [ -d "$moddir" ] || moddir="$x/usr/lib/modules/$kver"
vmlinuz="$x/boot/vmlinuz-$kver"
[ -f "$vmlinuz" ] || die "no /boot/vmlinuz-$kver in $kernel_pkg"
cp "$vmlinuz" "$work/fun-kernel"
# extract-vmlinux: the payload of Debian's bzImage is one XZ stream.
off=$(LC_ALL=C grep -abo -m1 $'\xfd7zXZ' "$vmlinuz" | head -1 | cut -d: -f1 || true)
[ -n "$off" ] || die "$vmlinuz: no XZ payload found (not an XZ-compressed bzImage?)"
# (tail's status is ignored: it gets SIGPIPE when xz stops at the end of the stream)
xz -dc --single-stream < <(tail -c +$((off + 1)) "$vmlinuz" 2>/dev/null || true) > "$work/fun-kernel.pvh" 2>/dev/null ||
  die "$vmlinuz: cannot decompress the XZ payload"
head -c 4 "$work/fun-kernel.pvh" | grep -q 'ELF' || die "$vmlinuz: the payload is not an ELF vmlinux"

depmod -b "$x" "$kver" 2>/dev/null || die "depmod on the unpacked kernel failed"
mkdir -p "$r/usr/lib/modules/$kver"
for m in "${modules_disk[@]}" "${modules_fs[@]}" "${modules_boot[@]}" "${modules_net[@]}"; do
  deps=$(modprobe -d "$x" -S "$kver" --show-depends "$m" 2>&1) ||
    die "kernel module $m: $(echo "$deps" | head -1)"
  echo "$deps" | awk '$1 == "insmod" {print $2}' | while read -r ko; do
    rel=${ko#"$moddir"/}
    mkdir -p "$(dirname "$r/usr/lib/modules/$kver/$rel")"
    cp "$ko" "$r/usr/lib/modules/$kver/$rel"
  done
done
for f in modules.order modules.builtin modules.builtin.modinfo; do
  [ -f "$moddir/$f" ] && cp "$moddir/$f" "$r/usr/lib/modules/$kver/"
done
# depmod -b PREFIX reads PREFIX/lib/modules/<version>; in the guest /lib is /usr/lib.
depmod -b "$r/usr" "$kver" || die "depmod on the staged modules failed"
[ -f "$r/usr/lib/modules/$kver/modules.dep" ] || die "depmod wrote no modules.dep"
printf '%s\n' "${modules_disk[@]}" > "$r/etc/fun/modules.disk"
printf '%s\n' "${modules_fs[@]}" > "$r/etc/fun/modules.fs"
printf '%s\n' "${modules_boot[@]}" > "$r/etc/fun/modules.boot"
printf '%s\n' "${modules_net[@]}" > "$r/etc/fun/modules.net"

# Configuration files.
cp "$here/containerd-config.toml" "$r/etc/containerd/config.toml"
cat > "$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat > "$r/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
cat > "$r/etc/hosts" <<'EOF'
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
EOF
echo "hosts: files dns" > "$r/etc/nsswitch.conf"
echo fun > "$r/etc/hostname"
: > "$r/etc/resolv.conf"
ln -sf /proc/mounts "$r/etc/mtab"
{
  echo "kernel_package=$kernel_pkg"
  echo "kernel_version=$kver"
  echo "inputs=$hash"
} > "$r/etc/fun/image"
# Static files of the guest (CNI conflist, acpid config, ...) override the defaults above.
if [ -d "$repo/guest/rootfs" ]; then cp -a "$repo/guest/rootfs/." "$r/"; fi
install -m 755 "$repo/guest/init" "$r/init"
# The pod sandbox image, served in the VM by fun-guestd (see --images).
if [ -n "$images" ]; then
  mkdir -p "$r/usr/share/fun/images/fun"
  cp -a "$images/pause" "$r/usr/share/fun/images/fun/pause"
fi

# Trim what a VM never reads.
rm -rf "$r/usr/share/doc" "$r/usr/share/man" "$r/usr/share/info" "$r/usr/share/lintian"
# A /dev/console node lets the kernel give /init a console before devtmpfs is mounted (the
# kernel's built-in initramfs has one too, so this is best effort without root).
mknod -m 600 "$r/dev/console" c 5 1 2>/dev/null || true

# ---------------------------------------------------------------------------------------
# 4. The system disk: the big binaries move to an ext4 image, symlinks stay behind.

if [ $system_disk = 1 ]; then
  s="$work/system"
  sysroot=/usr/lib/fun/system
  moved=(usr/bin/containerd usr/bin/containerd-shim-runc-v2 usr/sbin/runc)
  for p in "${cni_plugins[@]}"; do moved+=("usr/lib/cni/$p"); done
  [ $with_ctr = 0 ] || moved+=(usr/bin/ctr)
  : > "$r/etc/fun/system-files"
  for f in "${moved[@]}"; do
    [ -f "$r/$f" ] && [ ! -L "$r/$f" ] || die "system disk: $f is not a staged file"
    mkdir -p "$(dirname "$s/$f")"
    mv "$r/$f" "$s/$f"
    ln -s "$sysroot/$f" "$r/$f"
    echo "$f" >> "$r/etc/fun/system-files"
  done
  echo "$system_serial" > "$s/.fun-system"
  # Sized to the files plus room for ext4's metadata; no journal (never written), a fixed
  # UUID and hash seed (from the inputs' hash) so one set of inputs gives one image.
  kib=$(du -sk --apparent-size "$s" | cut -f1)
  size_mib=$(( (kib * 11 / 10) / 1024 + 8 ))
  uuid=$(echo "$hash" | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/')
  E2FSPROGS_FAKE_TIME=1 mke2fs -q -F -t ext4 -b 4096 -m 0 -N 64 -L fun-system -U "$uuid" \
    -E "hash_seed=$uuid,root_owner=0:0" -O ^has_journal,^resize_inode -d "$s" \
    "$work/fun-system.img" "${size_mib}M" > /dev/null 2> "$work/mke2fs.err" ||
    die "mke2fs of the system disk failed: $(head -1 "$work/mke2fs.err")"
  # mke2fs -d keeps the builder's uid/gid: the files belong to root in the VM.
  (cd "$s" && find . -mindepth 1 | while read -r f; do
     echo "set_inode_field ${f#.} uid 0"; echo "set_inode_field ${f#.} gid 0"; done) > "$work/owners"
  debugfs -w -f "$work/owners" "$work/fun-system.img" > /dev/null 2> "$work/debugfs.err" ||
    die "debugfs on the system disk failed: $(head -1 "$work/debugfs.err")"
  cmdline="$cmdline fun.system=$system_serial"
fi

# ---------------------------------------------------------------------------------------
# 5. The cpio, the outputs, the stamp.

(cd "$r" && find . -mindepth 1 | LC_ALL=C sort |
  cpio -o -H newc -R 0:0 --reproducible --quiet) > "$work/initrd.cpio" || die "cpio failed"
case "$compress" in
  none) mv "$work/initrd.cpio" "$work/fun-initrd.img" ;;
  gzip) gzip -6 -n -c "$work/initrd.cpio" > "$work/fun-initrd.img" ;;
  lz4) lz4 -l -9 -q -c "$work/initrd.cpio" > "$work/fun-initrd.img" ;;  # -l: the kernel's legacy frame
  zstd) zstd -q -19 -T0 -c "$work/initrd.cpio" > "$work/fun-initrd.img" ;;
esac
echo "$cmdline" > "$work/fun-cmdline"

rm -f "$out/.inputs"
[ $system_disk = 1 ] || rm -f "$out/fun-system.img"
for f in "${outputs[@]}"; do mv -f "$work/$f" "$out/$f"; done
{ echo "$hash"; echo "$manifest"; } > "$out/.inputs"

end=$(date +%s.%N)
echo "linuxkit/build.sh: built $out in $(awk -v s="$start" -v e="$end" 'BEGIN {printf "%.1f", e - s}') s" \
  "(kernel $kver, initrd $compress, $(du -sh --apparent-size "$r" | cut -f1) unpacked)"
print_sizes

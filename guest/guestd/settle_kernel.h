// settle_kernel.h: makes the guest kernel patch its own code at boot, with one CPU online,
// instead of when the first container starts with every vCPU running.
//
// Why: the kernel switches rarely-used paths on and off by rewriting its code (static keys:
// jump labels). Under QEMU 7.2's multi-threaded TCG that rewrite can hang the VM: a vCPU keeps
// running a stale translation of the patched instruction (a breakpoint the kernel already
// removed) while holding a lock the patching vCPU waits for (docs/next.md, "Guest CPU lockup").
// Dumping the kernel's text with QMP before and after showed what a container starts flipping
// on a fresh VM (harness step first_container_patches_no_kernel_text checks it stays so):
//   - the first non-root memory and cpuset cgroups: memcg_kmem_enabled_key (slab and page
//     allocation, the hottest paths there are), memcg_sockets_enabled_key,
//     cpusets_enabled_key and cpusets_pre_enable_key: 65 sites;
//   - each container while it runs: runc's device program, cgroup_bpf_enabled_key[DEVICE],
//     on while any container runs and off again when the last one ends;
//   - the first bridge (br_netfilter's IPv6 PRE_ROUTING hook: nf_hooks_needed);
//   - the first TCP connect (the once key of __inet_hash_connect's secret);
//   - the first packet the kernel hashes itself (the once key of the flow hash secret:
//     flow_hash_from_keys, __skb_get_hash_symmetric, __skb_get_hash_net). It is not the first
//     packet sent: fq_codel sends a packet that meets an idle queue without hashing it (a
//     frame sent from a packet socket at boot did not flip it), so the flip came at some
//     later burst. Settle hashes one on purpose: a packet socket on lo in a
//     PACKET_FANOUT_HASH group, and one UDP datagram to 127.0.0.1.
// The once keys are switched off by a work item: settle sleeps a moment before it brings the
// CPUs back so that the work runs on the one CPU.
// SettleKernel takes every CPU but the first offline, flips those keys (and keeps them on: an
// empty cgroup of our own holds the cgroup keys, with an allow-all device program attached),
// and brings the CPUs back. With one CPU online the patching CPU is the only one running code.
//
//   SettleOptions o;                      // defaults: the real VM's paths
//   SettleReport r = SettleKernel(o);     // r.errors: one line each; the CPUs are back online
//
// Run once per boot by /init (`fun-guestd --settle-kernel`), before the host is told the VM
// is ready. Each step is idempotent.
#pragma once

#include <string>
#include <vector>

#include "lib/base/status.h"

namespace fun::guestd {

inline constexpr char kSettleKernelFlag[] = "--settle-kernel";

struct SettleOptions {
  std::string cpu_dir = "/sys/devices/system/cpu";  // cpuN/online
  // The cgroup that holds the cgroup keys on. Its parent must have the cpuset and memory
  // controllers in cgroup.subtree_control (/init enables every controller at the root).
  std::string cgroup = "/sys/fs/cgroup/fun-static-keys";
  // A bridge created and deleted again (br_netfilter registers its hooks for the network
  // namespace at the first bridge and keeps them). Empty: skipped.
  std::string bridge = "fun-settle0";
  bool connect_loopback = true;      // one refused TCP connect on 127.0.0.1
  bool hash_loopback_packet = true;  // one UDP datagram on lo through a hash fanout group
};

struct SettleReport {
  std::vector<int> cpus_offlined;   // and brought back online
  std::vector<std::string> done;    // what was flipped, one line each
  std::vector<std::string> errors;  // what failed, one line each
};

// Every online CPU but the lowest, taken offline (their numbers, ascending).
StatusOr<std::vector<int>> TakeSecondaryCpusOffline(const std::string& cpu_dir);
// Brings `cpus` online again; tries each and reports the first failure.
Status BringCpusOnline(const std::string& cpu_dir, const std::vector<int>& cpus);

// Creates `cgroup` if needed and attaches a device program that allows every access, unless
// one is attached already. The program stays attached after the call (the cgroup holds it).
Status AttachAllowAllDeviceProgram(const std::string& cgroup);
// How many device programs are attached to `cgroup` itself (BPF_PROG_QUERY).
StatusOr<int> DeviceProgramsAttached(const std::string& cgroup);

// Creates the bridge `name` in this network namespace and deletes it again.
Status CreateAndDeleteBridge(const std::string& name);
// A TCP connect to a bound, not listening 127.0.0.1 port: refused, as expected.
Status ConnectRefusedOnLoopback();
// One UDP datagram to 127.0.0.1 while a packet socket on lo belongs to a PACKET_FANOUT_HASH
// group: the kernel computes the frame's flow hash. OK once the packet socket saw the frame.
Status HashAPacketOnLoopback();

SettleReport SettleKernel(const SettleOptions& o);

}  // namespace fun::guestd

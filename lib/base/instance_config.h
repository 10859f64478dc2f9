// instance_config.h: an instance's configuration (instances/<name>/config.json) as a value,
// with its defaults, its validation, and its JSON form.
//
// config.json is written by fun-vmctl and edited by people, so it is read strictly and every
// mistake comes back as one InvalidArgument line that names the key path, the bad value as
// JSON and what is allowed:
//
//   ports[1].host_port: 70000 is out of range, expected an integer from 1 to 65535
//   unknown key "cpu" at top level (did you mean "cpus"?)
//   config.json:3:14: malformed JSON: syntax error while parsing object - ...
//
// Every key is optional; a missing key keeps the value from the `defaults` argument, usually
// DefaultInstanceConfig() for this host (a "shares" or "ports" key replaces the default list). A
// parsed config is complete: each share has its guest_path and tag filled in, so
// SerializeInstanceConfig() writes everything explicitly and parses back to an equal value.
//
//   fun::InstanceConfig defaults = fun::DefaultInstanceConfig(
//       {.is_macos = true, .is_arm64 = true, .home_dir = "/Users/alice"});
//   FUN_ASSIGN_OR_RETURN(fun::InstanceConfig config,
//                        fun::LoadInstanceConfigFile(dir + "/config.json", defaults));
//   config.cpus = 4;
//   FUN_RETURN_IF_ERROR(fun::SaveInstanceConfigFile(dir + "/config.json", config));
//
// Parsing never touches the host: paths are checked for form (absolute, no "." or ".."), not
// for existence, and a backend is not checked against the platform (fun-doctor does that).
//
// Thread-safety: values and pure functions, safe from any thread. SaveInstanceConfigFile
// replaces the file atomically, so a concurrent reader sees the old or the new file, never a
// mix; two concurrent writers of one file race (the last rename wins).
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lib/base/protocol.h"
#include "lib/base/status.h"

namespace fun {

// Which hypervisor runs the instance.
enum class Backend {
  kQemu,      // "qemu": Linux (KVM or TCG) and macOS (HVF)
  kHyperkit,  // "hyperkit": macOS x86_64, Hypervisor.framework
  kNative,    // "native": Linux only, the host's own containerd, no VM
};

// Which accelerator the hypervisor uses. kAuto lets the backend pick the best it finds.
enum class Accel { kAuto, kKvm, kHvf, kTcg, kNone };

// "qemu", "hyperkit", "native" ("unknown" for a value outside the enum).
std::string_view BackendName(Backend backend);
// The inverse of BackendName (exact, lower case). The error names the value and the choices:
//   "qemux" is not a known backend, expected one of "qemu", "hyperkit", "native" (did you ...)
StatusOr<Backend> ParseBackend(std::string_view name);

// "auto", "kvm", "hvf", "tcg", "none".
std::string_view AccelName(Accel accel);
StatusOr<Accel> ParseAccel(std::string_view name);

// Whether `backend` can run with `accel`: qemu takes auto, kvm, hvf or tcg; hyperkit only
// auto or hvf (it is built on Hypervisor.framework); native only auto or none.
bool IsAccelSupported(Backend backend, Accel accel);

// The inverse of ProtocolName (lib/base/protocol.h).
StatusOr<Protocol> ParseProtocol(std::string_view name);

// Limits checked by validation (inclusive).
inline constexpr int kMinCpus = 1;
inline constexpr int kMaxCpus = 64;
inline constexpr int kMinMemoryMib = 256;
inline constexpr int kMaxMemoryMib = 131072;
inline constexpr int kMinDiskGib = 1;
inline constexpr int kMaxDiskGib = 2048;
// Instance names are directory names: ^[a-z0-9][a-z0-9_-]{0,31}$.
inline constexpr size_t kMaxInstanceNameLength = 32;
// 9P mount tags: [a-z0-9_-]{1,31} (kvmtool and older QEMU cap tags at 32 bytes with the NUL).
inline constexpr size_t kMaxShareTagLength = 31;
// Paths in shares: at most this many bytes (Linux PATH_MAX including the NUL).
inline constexpr size_t kMaxSharePathLength = 4095;

// The structs below give every member a default initializer, so designated initializers may
// name only some of them (GCC's -Wmissing-field-initializers stays quiet).

// A host folder shared into the VM over 9P.
struct Share {
  // The folder on the host. Absolute, without "." or ".." components. Required.
  std::string host_path{};
  // Where the folder appears in the VM. Empty means "the same path as on the host" (as Lima
  // does), so paths in bind mounts mean the same thing on both sides. Never "/".
  std::string guest_path{};
  bool read_only = false;
  // The 9P export name ([a-z0-9_-], at most 31 characters, unique in the instance). Empty
  // means "derive one from host_path" (see NormalizeInstanceConfig).
  std::string tag{};
  // The VM's v9fs cache mode: "mmap" (coherent: host and container edits are seen at once by
  // the other side; every path lookup goes to the host, so many small files are slow), "loose"
  // (dentries, attributes and pages cached: much faster, but edits made on the host may stay
  // unseen in the VM), or "none" ("mmap" without shared writable mmaps).
  std::string cache = "mmap";

  friend bool operator==(const Share&, const Share&) = default;
};

// A published port: the host listens on host_ip:host_port and forwards to guest_port.
struct PortForward {
  // An IPv4 or IPv6 literal. 127.0.0.1 unless the user names another address.
  std::string host_ip = "127.0.0.1";
  uint16_t host_port = 0;   // 1..65535
  uint16_t guest_port = 0;  // 1..65535
  Protocol protocol = Protocol::kTcp;

  friend bool operator==(const PortForward&, const PortForward&) = default;
};

// The contents of config.json.
struct InstanceConfig {
  // The instance (and directory) name: ^[a-z0-9][a-z0-9_-]{0,31}$.
  std::string name = "default";
  Backend backend = Backend::kQemu;
  Accel accel = Accel::kAuto;
  int cpus = 2;           // kMinCpus..kMaxCpus
  int memory_mib = 2048;  // kMinMemoryMib..kMaxMemoryMib
  int disk_gib = 20;      // kMinDiskGib..kMaxDiskGib
  std::vector<Share> shares{};
  std::vector<PortForward> ports{};
  // Ports that sockets listening in the VM (services, host-network containers) appear on at
  // host loopback, as Lima does: "all", "off", or port ranges such as "3000,8000-8999".
  std::string auto_forward = "all";
  // Under TCG (no KVM or HVF): "multi" gives each vCPU a host thread of its own (QEMU's
  // default), "single" runs them all on one. Both have a failure mode under QEMU 7.2 (see
  // docs/troubleshooting/FUN0010.md, "CPU stall"): with multi the guest can hang for good while
  // its kernel patches its own code (static keys, tracepoints: runc flips some for every
  // container; reproduced in minutes by toggling a tracepoint, never with single); with single
  // a guest short of memory got no timer interrupts for 20 s (soft lockup, its clock 21 s
  // behind) and everything is slower (boot 4.7 -> 7.0 s here). Multi stays the default.
  std::string tcg_threads = "multi";
  // How the shares reach the VM under QEMU: "serial" (a virtio-serial port per share and a
  // relay process in the guest: any QEMU, any host) or "vsock" (fun-hostd serves QEMU a
  // vhost-user vsock device and the guest kernel mounts each share on a vsock stream: no relay;
  // Linux hosts only, lib/vsock/device.h). HyperKit always uses its virtio-9p devices. The
  // machine's default (DefaultInstanceConfig): "vsock" on Linux (2-2.5x the small-file rate of
  // "serial" under TCG, perf/p9_vm.sh), "serial" on macOS; a config without the key gets it.
  std::string share_transport = "serial";
  // How fun-hostd and the CLIs reach the guest agent under QEMU: "tcp" (QEMU's user-mode
  // network forwards a loopback port to the guest's tcp:7070: slirp's hostfwd, backlog 1) or
  // "vsock" (fun-hostd's vhost-user vsock device, as the shares use it: its
  // <instance>/vsock.connect socket reaches the guest's vsock:7070; Linux hosts only; the guest
  // listens on both). HyperKit always uses its virtio-sock. The machine's default
  // (DefaultInstanceConfig): "vsock" on Linux (a published port carries 2.1-2.3x the bytes under
  // TCG, perf/port_forward_vm.sh), "tcp" on macOS; a config without the key gets it.
  std::string agent_transport = "tcp";

  friend bool operator==(const InstanceConfig&, const InstanceConfig&) = default;
};

// The facts about the host that the defaults depend on, so both platforms test anywhere.
struct ConfigDefaultsContext {
  bool is_macos = false;
  bool is_arm64 = false;
  // The user's home folder; shared into the VM at the same path when absolute.
  std::string home_dir{};
};

// The configuration of a new instance on this host: hyperkit on macOS x86_64, qemu elsewhere;
// 2 cpus, 2048 MiB, 20 GiB; the home folder shared read-write at the same path. The result
// is normalized (the share's tag is filled in).
InstanceConfig DefaultInstanceConfig(const ConfigDefaultsContext& context);

// Checks `name` as an instance name; the error reads
//   "My VM" is not a valid instance name, expected a name of 1 to 32 characters ...
Status ValidateInstanceName(std::string_view name);

// Fills what a complete config derives (an empty guest_path becomes host_path, an empty tag
// a unique tag derived from host_path) and validates every field and the cross-field rules.
// Use it on configs built in code (for example from command-line flags). Errors use the same
// key paths and wording as ParseInstanceConfig. Idempotent.
StatusOr<InstanceConfig> NormalizeInstanceConfig(InstanceConfig config);

// Parses config.json text. Keys missing from `json_text` keep their value from `defaults`;
// the result is normalized as by NormalizeInstanceConfig.
//
// Only the first error is reported, found in this order:
//   1. malformed JSON: "<source_name>:<line>:<column>: malformed JSON: <what>" (1-based; the
//      column counts UTF-8 characters);
//   2. the top level is not an object;
//   3. a key repeated in one object (the first repeat in document order);
//   4. the top-level keys, in document order: an unknown key (with a did-you-mean suggestion
//      for a known key at edit distance <= 2, ignoring case, and at most half its length;
//      else the list of known keys);
//   5. the fields in this order: name, backend, accel, cpus, memory_mib, disk_gib, shares,
//      ports; an array element by element, each element's unknown keys first, then its fields
//      in declaration order (host_path, guest_path, read_only, tag; host_ip, host_port,
//      guest_port, protocol), each field's JSON type before its value;
//   6. cross-field rules: accel supported by backend; shares in order (guest_path used twice,
//      tag used twice); ports in order (host address, port and protocol published twice,
//      counting 0.0.0.0 and :: as overlapping every address of their family).
// Errors after step 1 carry no source prefix; LoadInstanceConfigFile adds the file's path.
StatusOr<InstanceConfig> ParseInstanceConfig(std::string_view json_text,
                                             const InstanceConfig& defaults,
                                             std::string_view source_name = "config.json");

// The config as JSON (keys sorted), for `--json` output. Callers include <nlohmann/json.hpp>.
nlohmann::json ToJson(const InstanceConfig& config);

// config.json text: pretty JSON with a 2-space indent, keys in declaration order, ending in a
// newline. Empty guest_path and tag are left out (so they are derived again when parsed), so
// ParseInstanceConfig(SerializeInstanceConfig(c), any) == NormalizeInstanceConfig(c), which is
// c itself for a parsed or normalized c.
std::string SerializeInstanceConfig(const InstanceConfig& config);

// Reads and parses the file at `path` (at most 1 MiB, a regular file). NotFound when it does
// not exist; every error message starts with the path:
//   /home/a/.local/state/fun/instances/default/config.json: cpus: 0 is out of range, ...
StatusOr<InstanceConfig> LoadInstanceConfigFile(const std::string& path,
                                                const InstanceConfig& defaults);

// Normalizes `config` (refusing an invalid one) and writes it to `path` atomically: a
// temporary file in the same directory, fsync, rename over `path`, fsync of the directory.
// The file has mode 0600. The directory must exist.
Status SaveInstanceConfigFile(const std::string& path, const InstanceConfig& config);

// Parses a docker-style port spec, `[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|/udp]`, an IPv6 host
// address in brackets: "8080:80", "0.0.0.0:8080:80/udp", "[::1]:8080:80". The host address
// defaults to 127.0.0.1 and the protocol to tcp. Port ranges and random host ports are not
// supported.
StatusOr<PortForward> ParsePortSpec(std::string_view spec);

// auto_forward: "all" -> {{1, 65535}}, "off" -> {}, "3000,8000-8999" -> {{3000, 3000},
// {8000, 8999}}. Ranges are inclusive, ascending within, at most 64 of them.
StatusOr<std::vector<std::pair<uint16_t, uint16_t>>> ParsePortRanges(std::string_view spec);

// The inverse of ParsePortSpec, always in full form: "127.0.0.1:8080:80/tcp",
// "[::1]:8080:80/udp".
std::string FormatPortSpec(const PortForward& port);

}  // namespace fun

// checks.h: fun-doctor's catalog of checks, in the order they run, and the pure helpers the
// probes are built from (exposed so tests can drive them with made-up input).
//
//   FUN0001  Hypervisor present and executable     fatal
//   FUN0002  Accelerator usable                    fatal (TCG is a warning)
//   FUN0003  Host memory                           fatal
//   FUN0004  Free disk space for the state dir     fatal
//   FUN0005  Host OS version and architecture      fatal
//   FUN0006  VM image present                      fatal
//   FUN0007  Instance directory permissions
//   FUN0008  Stale pid files and sockets
//   FUN0009  VM running
//   FUN0010  Boot console free of known errors
//   FUN0011  containerd answers CRI
//   FUN0012  Log files
//   FUN0013  Published ports listening
//   FUN0014  No host port conflicts
//   FUN0015  VM outbound network
//   FUN0016  VM resolves names (DNS)
//   FUN0017  Shared folders mounted in the VM
//   FUN0018  Guest agent answering
//   FUN0019  Clock in step with the host          (--fix sets it)
//   FUN0020  Data disk space in the VM
//   FUN0021  Privileges the hypervisor needs
//
// --fix also repairs FUN0007 (modes of the instance's files), FUN0008 (stale pid files and
// sockets) and FUN0009 (a VM that cannot work: running without its fun-hostd, or a start stuck
// for kStuckStartAfter, is stopped).
//
// Ids are stable: a check that goes away leaves its id unused. Each has a page
// docs/troubleshooting/<id>.md.
//
//   for (const Check& c : AllChecks()) {
//     CheckResult r = c.probe(ctx);
//   }
//   const Check* c = FindCheck("fun0011");  // case-insensitive; nullptr when unknown
//
// Thread-safety: the catalog is built once (thread-safe static) and never changes; the
// helpers are pure.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/instance_config.h"
#include "lib/base/paths.h"
#include "lib/base/status.h"
#include "lib/vm/port_publisher.h"
#include "tools/doctor/check.h"

namespace fun::doctor {

// Thresholds, in decimal units as hardware is sold ("a 4 GB Mac" passes).
inline constexpr uint64_t kMinMemoryBytes = 4'000'000'000ULL;
inline constexpr uint64_t kRecommendedMemoryBytes = 8'000'000'000ULL;
inline constexpr uint64_t kMinFreeDiskBytes = 10'000'000'000ULL;
// The oldest macOS Fun supports (Mojave).
inline constexpr std::array<int, 3> kMinMacosVersion = {10, 14, 0};
// CRI Version must answer within this.
inline constexpr std::chrono::milliseconds kCriDeadline{1000};
// `<hypervisor> --version` must exit within this.
inline constexpr std::chrono::milliseconds kVersionTimeout{1500};
// How much of the end of console.log is scanned.
inline constexpr size_t kConsoleScanBytes = 8u << 20;
// At most this many matching console lines are shown.
inline constexpr size_t kMaxConsoleLinesShown = 12;
// FUN0013: each published TCP port must accept within this, and all of them within the budget
// (ports not probed once it is spent are listed as such).
inline constexpr std::chrono::milliseconds kPortProbeTimeout{300};
inline constexpr std::chrono::milliseconds kPortProbeBudget{1000};
// ports.json larger than this is taken as damaged (a table of thousands of rows is < 1 MB).
inline constexpr size_t kPortsJsonMaxBytes = 4u << 20;
// FUN0015: the VM's dial to the host, the connection arriving and the bytes, together.
inline constexpr std::chrono::milliseconds kOutboundTimeout{1000};
// FUN0016: the VM's DNS query waits this long for an answer (the agent's dial included in the
// first wait), and goes out at most this many times: 2 s at worst.
inline constexpr std::chrono::milliseconds kDnsAttemptTimeout{1000};
inline constexpr int kDnsAttempts = 2;
// FUN0009's --fix stops a start that has been "starting" for longer than this (a boot under TCG
// on a loaded machine takes well under a minute).
inline constexpr std::chrono::minutes kStuckStartAfter{10};
// FUN0019: the VM's clock may be off by this much beyond the measurement's uncertainty.
inline constexpr std::chrono::milliseconds kMaxClockDrift{2000};
// FUN0020: the data disk fails below max(1 GB, 5%) free and warns below max(3 GB, 15%).
inline constexpr uint64_t kDataDiskFailBytes = 1'000'000'000ULL;
inline constexpr uint64_t kDataDiskWarnBytes = 3'000'000'000ULL;

// Every check, in the order they run.
const std::vector<Check>& AllChecks();
// The check with this id (case-insensitive), or nullptr.
const Check* FindCheck(std::string_view id);

// --- pure helpers -------------------------------------------------------------------------

// A known error pattern of the guest's serial console.
struct ConsolePattern {
  std::string_view kind;                // "kernel panic", "out of memory", ...
  std::vector<std::string_view> parts;  // all present in the line, in this order
  std::string_view hint;                // what to do about it
  // kWarn: worth knowing, but the VM still works (a container's process the OOM killer ended).
  CheckStatus status = CheckStatus::kFail;
};
// The patterns, most specific first (a line is labelled with the first that matches).
const std::vector<ConsolePattern>& ConsolePatterns();

struct ConsoleMatch {
  size_t line = 0;   // 1-based, within the scanned text
  std::string kind;  // ConsolePattern::kind
  std::string text;  // the line, sanitized (SanitizeLine) and at most 200 bytes
  std::string_view hint;
  CheckStatus status = CheckStatus::kFail;  // ConsolePattern::status
};
// Every line of `text` that matches a pattern, in order.
std::vector<ConsoleMatch> ScanConsole(std::string_view text);

// Bytes from the guest or a file, made safe for a terminal and for JSON: control characters
// (ESC included) become '?', a trailing '\r' is dropped, and the result is cut to `max_bytes`
// (with "..." when cut). UTF-8 is kept as is (the JSON writer replaces invalid sequences).
std::string SanitizeLine(std::string_view line, size_t max_bytes = 200);

// "10.14.6" -> {10, 14, 6}; "11" -> {11, 0, 0}. InvalidArgument otherwise.
StatusOr<std::array<int, 3>> ParseMacosVersion(std::string_view version);

// Decimal units, one decimal: "16.4 GB", "512.0 MB", "900 B".
std::string FormatBytes(uint64_t bytes);
// "0700".
std::string FormatMode(unsigned mode);

// One row of ports.json as people read it: "127.0.0.1:8080/tcp -> 10.88.0.5:80 (web)".
std::string FormatPublishRow(const vm::PublishState& row);
// Whether a row's error says another holder has the host port: "... is already in use on
// this host ..." (something outside Fun) or "... is published by web already" (another wish).
bool IsPortConflict(std::string_view error);
// The address a probe dials to reach a host port bound to `ip`: the wildcard addresses
// ("0.0.0.0", "::") become loopback of their family; others are themselves.
std::string ProbeAddress(const std::string& ip);

// FUN0020: kFail, kWarn or kPass for a disk of `total` bytes with `avail` free.
CheckStatus ClassifyDataDisk(uint64_t total, uint64_t avail);

// The nearest ancestor of `path` (itself included) that `env` says exists, "/" at worst.
std::string NearestExisting(DoctorEnv& env, const std::string& path);

}  // namespace fun::doctor

// bundle.h: `fun-doctor bundle`, a support archive to attach to a bug report.
//
// One uncompressed tar (ustar) file, fun-bundle-<instance>-<UTC time>.tar, holding:
//   README.txt       what each file is
//   versions.txt     fun's version and revision, the host OS, the hypervisor's and the guest
//                    agent's versions (as the checks found them)
//   doctor.json      every check's result (the same JSON as `fun-doctor --json`)
//   status.json      `fun-vmctl status --json` of the instance
//   config.json, state.json, ports.json   the instance's files, secrets redacted
//   logs/console.log, logs/hostd.log, logs/linuxkit.log   the last kBundleLogTailBytes of each
// Never the instance secret (the `secret` file), never user data (data.img, shared folders).
// Redaction: JSON keys that name a secret (secret, token, password, passwd, auth, credential,
// key, case-insensitive) get "<redacted>" as their value, and the instance secret's bytes, raw
// or as hex, are replaced by "<redacted>" wherever they appear in any file of the bundle.
//
//   auto path = WriteBundle(ctx, report, {.out = ""});  // default: next to the state dir
//
// Everything is read and written through the DoctorEnv (a fake in tests); the archive format
// and the redaction are pure functions.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/status.h"
#include "tools/doctor/check.h"
#include "tools/doctor/runner.h"

namespace fun::doctor {

inline constexpr size_t kBundleLogTailBytes = 2u << 20;

struct BundleEntry {
  std::string name;  // relative path in the archive, "logs/hostd.log"
  std::string contents;
};

// A POSIX ustar archive of regular files (mode 0600, owner 0, the given mtime), ending with the
// two zero blocks. InvalidArgument for a name that is empty, absolute, has a ".." component or
// is longer than ustar's 100 bytes.
StatusOr<std::string> TarArchive(const std::vector<BundleEntry>& entries, int64_t mtime_unix);

// Whether a JSON key names a secret (see the top).
bool IsSecretKey(std::string_view key);
// `j` with the value of every secret-naming key (at any depth) replaced by "<redacted>".
nlohmann::json RedactJson(nlohmann::json j);
// `text` with every occurrence of each secret (as given, and as lowercase hex) replaced by
// "<redacted>". Secrets shorter than 8 bytes are ignored (they would match by chance).
std::string RedactText(std::string text, const std::vector<std::string>& secrets);

struct BundleOptions {
  // Where to write the archive: a path ending in ".tar", or a directory to put it in; "" for
  // the state dir (or /tmp when that does not exist).
  std::string out;
};
struct BundleResult {
  std::string path;
  std::vector<std::string> files;  // the archive's entries, in order
  std::vector<std::string> notes;  // what could not be collected, and why
};
// Collects the bundle for ctx's instance and writes it (mode 0600). `report`: the checks' results.
StatusOr<BundleResult> WriteBundle(DoctorContext& ctx, const Report& report,
                                   const BundleOptions& options);

}  // namespace fun::doctor

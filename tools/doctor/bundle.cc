#include "tools/doctor/bundle.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <chrono>

#include "lib/base/clock.h"
#include "lib/base/version.h"
#include "lib/vm/instance.h"

namespace fun::doctor {
namespace {

constexpr size_t kBlock = 512;
constexpr std::string_view kRedacted = "<redacted>";

// An octal field of `width` bytes: digits, zero-padded, then a NUL.
void PutOctal(std::string& header, size_t at, size_t width, uint64_t value) {
  std::string digits = fmt::format("{:0{}o}", value, width - 1);
  header.replace(at, width - 1, digits);
  header[at + width - 1] = '\0';
}

Status ValidateName(const std::string& name) {
  if (name.empty() || name.front() == '/' || name.size() > 100) {
    return InvalidArgumentError(
        fmt::format("tar entry \"{}\": must be a relative path of 1 to 100 bytes", name));
  }
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    std::string_view part(name.data() + start, end - start);
    if (part.empty() || part == "." || part == "..") {
      return InvalidArgumentError(fmt::format("tar entry \"{}\": bad path component", name));
    }
    start = end + 1;
  }
  return OkStatus();
}

std::string Hex(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) out += fmt::format("{:02x}", c);
  return out;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// "20261130-014136" (UTC), from the project's one UTC formatter.
std::string UtcStamp(Clock::WallTime t) {
  std::string out;
  for (char c : FormatRfc3339Millis(t).substr(0, 19)) {  // "2026-11-30T01:41:36"
    if (c == 'T') {
      out += '-';
    } else if (c != '-' && c != ':') {
      out += c;
    }
  }
  return out;
}

constexpr std::string_view kReadme =
    "Fun support bundle, made by `fun-doctor bundle`.\n"
    "\n"
    "  versions.txt   fun, the host OS, the hypervisor and the guest agent\n"
    "  doctor.json    every fun-doctor check's result (docs/troubleshooting/<ID>.md explains "
    "each)\n"
    "  status.json    `fun-vmctl status --json` of the instance\n"
    "  config.json, state.json, ports.json   the instance's files\n"
    "  logs/          the last 2 MiB of the VM's console, fun-hostd's log and linuxkit.log\n"
    "\n"
    "Secrets are redacted (\"<redacted>\"): the instance secret never leaves the machine, and "
    "JSON\n"
    "values under keys naming a secret, token, password or key are replaced. No user data (the\n"
    "VM's disk, shared folders) is included.\n";

}  // namespace

StatusOr<std::string> TarArchive(const std::vector<BundleEntry>& entries, int64_t mtime_unix) {
  std::string out;
  for (const BundleEntry& e : entries) {
    FUN_RETURN_IF_ERROR(ValidateName(e.name));
    std::string h(kBlock, '\0');
    h.replace(0, e.name.size(), e.name);
    PutOctal(h, 100, 8, 0600);                                                      // mode
    PutOctal(h, 108, 8, 0);                                                         // uid
    PutOctal(h, 116, 8, 0);                                                         // gid
    PutOctal(h, 124, 12, e.contents.size());                                        // size
    PutOctal(h, 136, 12, static_cast<uint64_t>(std::max<int64_t>(mtime_unix, 0)));  // mtime
    h[156] = '0';                                  // a regular file
    h.replace(257, 6, std::string("ustar\0", 6));  // magic
    h.replace(263, 2, "00");                       // version
    // The checksum is computed with its own field as spaces, then written as 6 digits, NUL,
    // space.
    h.replace(148, 8, "        ");
    unsigned sum = 0;
    for (unsigned char c : h) sum += c;
    h.replace(148, 8, fmt::format("{:06o}", sum) + std::string("\0 ", 2));
    out += h;
    out += e.contents;
    out.append((kBlock - e.contents.size() % kBlock) % kBlock, '\0');
  }
  out.append(2 * kBlock, '\0');
  return out;
}

bool IsSecretKey(std::string_view key) {
  std::string k = Lower(key);
  for (std::string_view word :
       {"secret", "token", "password", "passwd", "auth", "credential", "key"}) {
    if (k.find(word) != std::string::npos) return true;
  }
  return false;
}

nlohmann::json RedactJson(nlohmann::json j) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (IsSecretKey(it.key())) {
        it.value() = kRedacted;
      } else {
        it.value() = RedactJson(std::move(it.value()));
      }
    }
  } else if (j.is_array()) {
    for (auto& e : j) e = RedactJson(std::move(e));
  }
  return j;
}

std::string RedactText(std::string text, const std::vector<std::string>& secrets) {
  for (const std::string& secret : secrets) {
    if (secret.size() < 8) continue;
    for (const std::string& form : {secret, Hex(secret)}) {
      for (size_t at = text.find(form); at != std::string::npos;
           at = text.find(form, at + kRedacted.size())) {
        text.replace(at, form.size(), kRedacted);
      }
    }
  }
  return text;
}

StatusOr<BundleResult> WriteBundle(DoctorContext& ctx, const Report& report,
                                   const BundleOptions& options) {
  DoctorEnv& env = ctx.env();
  BundleResult result;
  std::vector<BundleEntry> entries;
  // The instance secret, to scrub from everything (never itself in the bundle).
  std::vector<std::string> secrets;
  if (auto s = env.ReadFileTail(ctx.instance_dir() + "/secret", 4096); s.ok() && !s->empty()) {
    secrets.push_back(*s);
  }
  auto add = [&](std::string name, std::string contents) {
    entries.push_back({std::move(name), RedactText(std::move(contents), secrets)});
  };
  add("README.txt", std::string(kReadme));

  // versions.txt: what the checks found, and the guest agent's own word.
  const HostOs& host = ctx.Host();
  std::string versions =
      fmt::format("fun {} ({})\nhost: {} {} on {}\ninstance: {}\n", kVersion, kGitRevision,
                  OsName(host.os), host.version, host.arch, ctx.instance());
  for (const Finding& f : report.findings) {
    if (f.check->id == "FUN0001" || f.check->id == "FUN0002" || f.check->id == "FUN0011") {
      versions += fmt::format("{} {}: {}\n", f.check->id, f.check->title, f.result.summary);
    }
  }
  const vm::InstanceStatus& st = ctx.Instance();
  if (st.exists && st.phase == "running") {
    const auto& ping = ctx.Ping();
    versions += ping.ok() ? fmt::format("guest agent: fun-guestd {} (VM up {:.0f} s)\n",
                                        ping->version, ping->uptime_s)
                          : fmt::format("guest agent: no answer ({})\n", ping.status().message());
  }
  add("versions.txt", std::move(versions));
  add("doctor.json", JsonDump(ReportToJson(report)) + "\n");
  add("status.json", RedactJson(vm::StatusToJson(st)).dump(2) + "\n");

  // The instance's JSON files, redacted as JSON (unparsable ones as text, marked).
  for (auto [name, kind] : {std::pair{"config.json", InstanceFileKind::kConfig},
                            std::pair{"ports.json", InstanceFileKind::kPortsJson}}) {
    std::string path = ctx.instance_file(kind);
    auto text = env.ReadFileTail(path, 4u << 20);
    if (!text.ok()) {
      result.notes.push_back(fmt::format("{}: {}", name, text.status().message()));
      continue;
    }
    auto j = nlohmann::json::parse(*text, nullptr, false);
    add(name, j.is_discarded() ? "(not valid JSON, as found)\n" + *text
                               : RedactJson(std::move(j)).dump(2) + "\n");
  }
  {
    std::string path = ctx.instance_dir() + "/state.json";
    auto text = env.ReadFileTail(path, 4u << 20);
    if (text.ok()) {
      auto j = nlohmann::json::parse(*text, nullptr, false);
      add("state.json", j.is_discarded() ? "(not valid JSON, as found)\n" + *text
                                         : RedactJson(std::move(j)).dump(2) + "\n");
    } else {
      result.notes.push_back(fmt::format("state.json: {}", text.status().message()));
    }
  }

  // Log tails.
  std::vector<std::pair<std::string, std::string>> logs = {
      {"logs/console.log", ctx.instance_file(InstanceFileKind::kConsoleLog)},
      {"logs/hostd.log", ctx.instance_file(InstanceFileKind::kHostdLog)}};
  std::string user_console = ctx.paths().ConsoleLogForUser(ctx.instance());
  if (user_console != logs[0].second) logs.push_back({"logs/linuxkit.log", user_console});
  for (const auto& [name, path] : logs) {
    auto text = env.ReadFileTail(path, kBundleLogTailBytes);
    if (!text.ok()) {
      result.notes.push_back(fmt::format("{}: {}", path, text.status().message()));
      continue;
    }
    add(name, std::move(*text));
  }
  if (!result.notes.empty()) {
    std::string notes = "Not collected:\n";
    for (const auto& n : result.notes) notes += "  " + n + "\n";
    add("NOT_COLLECTED.txt", std::move(notes));
  }

  // Where it goes.
  auto now = env.clock().Now();
  std::string file = fmt::format("fun-bundle-{}-{}.tar", ctx.instance(), UtcStamp(now));
  std::string path;
  if (options.out.size() > 4 && options.out.compare(options.out.size() - 4, 4, ".tar") == 0) {
    path = options.out;
  } else {
    std::string dir = options.out;
    if (dir.empty()) dir = env.Stat(ctx.paths().state_dir).ok() ? ctx.paths().state_dir : "/tmp";
    auto fs = env.Stat(dir);
    if (!fs.ok() || fs->type != FileType::kDirectory) {
      return InvalidArgumentError(fmt::format(
          "--out {}: not a directory and not a path ending in .tar: name a folder that exists",
          dir));
    }
    path = dir + "/" + file;
  }
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  FUN_ASSIGN_OR_RETURN(std::string tar, TarArchive(entries, secs));
  FUN_RETURN_IF_ERROR(env.WriteFile(path, tar, 0600));
  result.path = path;
  for (const auto& e : entries) result.files.push_back(e.name);
  return result;
}

}  // namespace fun::doctor

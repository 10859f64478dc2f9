#include "lib/vm/bind_mounts.h"

#include <fmt/format.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <memory>

#include "lib/base/log.h"

namespace fun::vm {

namespace {

constexpr size_t kMaxPath = 4095;

// The path's components, empty ones and "." left out ("//a/./b/" -> {"a", "b"}); ".." kept.
std::vector<std::string_view> Components(std::string_view path) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view part = path.substr(start, end - start);
    if (!part.empty() && part != ".") out.push_back(part);
    start = end + 1;
  }
  return out;
}

bool IsDriveLetterPath(std::string_view s) {
  return s.size() >= 3 && ((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')) &&
         s[1] == ':' && (s[2] == '\\' || s[2] == '/');
}

// Docker's volume names: [a-zA-Z0-9][a-zA-Z0-9_.-]*.
bool LooksLikeVolumeName(std::string_view s) {
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (s.empty() || !alnum(s[0])) return false;
  for (char c : s) {
    if (!alnum(c) && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

std::string SharesList(const std::vector<Share>& shares) {
  if (shares.empty()) return "none";
  std::string out;
  for (const Share& s : shares) {
    if (!out.empty()) out += ", ";
    out += s.host_path;
    if (s.read_only) out += " (read-only)";
  }
  return out;
}

}  // namespace

std::string CleanAbsolutePath(std::string_view path) {
  std::vector<std::string_view> kept;
  for (std::string_view part : Components(path)) {
    if (part == "..") {
      if (!kept.empty()) kept.pop_back();
      continue;
    }
    kept.push_back(part);
  }
  if (kept.empty()) return "/";
  std::string out;
  for (std::string_view part : kept) {
    out += '/';
    out += part;
  }
  return out;
}

StatusOr<VolumeSpec> ParseVolumeSpec(std::string_view spec) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(fmt::format("-v {:.200}: {}", spec, why));
  };
  if (spec.empty()) return bad("empty; give HOSTPATH:CTRPATH[:ro]");
  if (spec.find('\0') != std::string_view::npos) return bad("contains a NUL character");
  if (IsDriveLetterPath(spec) || spec.starts_with("\\\\")) {
    return bad(
        "Windows paths are not supported; give an absolute path on this machine (/Users/you/data)");
  }
  std::vector<std::string_view> parts;
  for (size_t start = 0;;) {
    const size_t colon = spec.find(':', start);
    parts.push_back(
        spec.substr(start, colon == std::string_view::npos ? spec.npos : colon - start));
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  if (parts.size() == 1) {
    return bad(
        "anonymous volumes are not supported; give HOSTPATH:CTRPATH[:ro] with an absolute host "
        "path");
  }
  if (parts.size() > 3) {
    return bad("too many ':'; give HOSTPATH:CTRPATH[:ro] (paths with ':' cannot be mounted)");
  }
  VolumeSpec v;
  v.spec = std::string(spec);
  const std::string_view host = parts[0];
  const std::string_view ctr = parts[1];
  if (host.empty()) return bad("the host path is empty; give HOSTPATH:CTRPATH[:ro]");
  if (host.front() != '/') {
    if (LooksLikeVolumeName(host)) {
      return bad(fmt::format(
          "named volumes are not supported; give an absolute host path (-v /path/on/host:{})",
          ctr.empty() ? "CTRPATH" : ctr));
    }
    // What the shell would have made of it, as the hint.
    std::string absolute;
    if (host == "." || host == "./") {
      absolute = "$PWD";
    } else if (host == "~" || host.starts_with("~/")) {
      absolute = fmt::format("$HOME{}", host.substr(1));
    } else {
      absolute = fmt::format("$PWD/{}", host.starts_with("./") ? host.substr(2) : host);
    }
    return bad(
        fmt::format("the host path {} is relative; give an absolute one (\"{}\")", host, absolute));
  }
  if (host.size() > kMaxPath) return bad(fmt::format("the host path is longer than {}", kMaxPath));
  if (ctr.empty()) return bad("the container path is empty; give HOSTPATH:CTRPATH[:ro]");
  if (ctr.front() != '/') {
    return bad(
        fmt::format("the container path {} is relative; give an absolute one (/{})", ctr, ctr));
  }
  if (ctr.size() > kMaxPath) {
    return bad(fmt::format("the container path is longer than {}", kMaxPath));
  }
  v.host_path = std::string(host);
  v.container_path = CleanAbsolutePath(ctr);
  if (v.container_path == "/") {
    return bad("the container path is \"/\"; mount onto a directory such as /data");
  }
  if (parts.size() == 3) {
    const std::string_view options = parts[2];
    if (options.empty()) return bad("the options after the last ':' are empty; give ro or rw");
    size_t start = 0;
    for (;;) {
      const size_t comma = std::min(options.find(',', start), options.size());
      const std::string_view o = options.substr(start, comma - start);
      VolumeSpec::Mode mode = VolumeSpec::Mode::kDefault;
      if (o == "ro") {
        mode = VolumeSpec::Mode::kReadOnly;
      } else if (o == "rw") {
        mode = VolumeSpec::Mode::kReadWrite;
      } else if (o == "cached" || o == "delegated" || o == "consistent") {
        return bad(fmt::format(
            "option \"{}\" is not supported (Docker Desktop ignores it too); drop it", o));
      } else {
        return bad(fmt::format("option \"{:.40}\" is not supported; the options are ro and rw", o));
      }
      if (v.mode != VolumeSpec::Mode::kDefault) {
        return bad("give one of ro and rw, once");
      }
      v.mode = mode;
      if (comma == options.size()) break;
      start = comma + 1;
    }
  }
  return v;
}

StatusOr<std::vector<VolumeSpec>> ParseVolumeSpecs(const std::vector<std::string>& specs) {
  std::vector<VolumeSpec> out;
  for (const std::string& s : specs) {
    FUN_ASSIGN_OR_RETURN(VolumeSpec v, ParseVolumeSpec(s));
    for (const VolumeSpec& o : out) {
      if (o.container_path == v.container_path) {
        return InvalidArgumentError(
            fmt::format("-v {:.200}: {} is already mounted (-v {:.200}); give each container "
                        "path once",
                        v.spec, v.container_path, o.spec));
      }
    }
    out.push_back(std::move(v));
  }
  return out;
}

StatusOr<std::string> ResolveHostPath(const std::string& path) {
  std::unique_ptr<char, decltype(&std::free)> real(::realpath(path.c_str(), nullptr), &std::free);
  if (real == nullptr) {
    const int e = errno;
    if (e == ENOENT) {
      return NotFoundError(
          fmt::format("{} does not exist; create it first (mkdir -p {}): fun does not create "
                      "host folders",
                      path, path));
    }
    return ErrnoError(e, fmt::format("resolving {}", path));
  }
  return std::string(real.get());
}

StatusOr<GuestLocation> MapHostPathToGuest(std::string_view host_path, const VmShares& vm) {
  const std::vector<std::string_view> path = Components(host_path);
  const Share* best = nullptr;
  size_t best_len = 0;
  for (const Share& s : vm.shares) {
    const std::vector<std::string_view> root = Components(s.host_path);
    if (root.size() > path.size()) continue;
    if (!std::equal(root.begin(), root.end(), path.begin())) continue;
    if (best == nullptr || root.size() > best_len) {
      best = &s;
      best_len = root.size();
    }
  }
  if (best == nullptr) {
    return FailedPreconditionError(fmt::format(
        "{0} is not under a shared folder (shares: {1}); share it: fun-vmctl stop {3} && "
        "fun-vmctl start {3} --share {0} (or add it to \"shares\" in {2})",
        host_path, SharesList(vm.shares), vm.config_path, vm.instance));
  }
  GuestLocation loc;
  loc.share = *best;
  std::string guest =
      CleanAbsolutePath(best->guest_path.empty() ? best->host_path : best->guest_path);
  for (size_t i = best_len; i < path.size(); ++i) {
    if (guest != "/") guest += '/';
    guest += path[i];
  }
  loc.guest_path = std::move(guest);
  return loc;
}

std::vector<Share> ResolveShareHostPaths(std::vector<Share> shares) {
  for (Share& s : shares) {
    if (s.guest_path.empty()) s.guest_path = s.host_path;
    if (auto real = ResolveHostPath(s.host_path); real.ok()) s.host_path = *real;
  }
  return shares;
}

StatusOr<std::vector<cri::BindMount>> PlanBindMounts(const std::vector<VolumeSpec>& specs,
                                                     const VmShares* vm) {
  std::vector<cri::BindMount> out;
  for (const VolumeSpec& v : specs) {
    const std::string context = fmt::format("-v {:.200}", v.spec);
    StatusOr<std::string> real = ResolveHostPath(v.host_path);
    if (!real.ok()) return real.status().WithContext(context);
    cri::BindMount m{.host_path = *real,
                     .source = *real,
                     .container_path = v.container_path,
                     .readonly = v.mode == VolumeSpec::Mode::kReadOnly};
    if (vm != nullptr) {
      StatusOr<GuestLocation> loc = MapHostPathToGuest(*real, *vm);
      if (!loc.ok()) {
        const bool moved = CleanAbsolutePath(v.host_path) != *real;
        return loc.status().WithContext(
            moved ? fmt::format("{}: {} resolves to {}", context, v.host_path, *real) : context);
      }
      if (loc->share.read_only) {
        if (v.mode == VolumeSpec::Mode::kReadWrite) {
          return FailedPreconditionError(fmt::format(
              "{}: {} is in the read-only shared folder {}; drop :rw (it is mounted read-only) "
              "or make the share writable (\"read_only\": false in {})",
              context, *real, loc->share.host_path, vm->config_path));
        }
        if (!m.readonly) {
          FUN_LOG(Debug, "{}: mounted read-only: {} is in the read-only shared folder {}", context,
                  *real, loc->share.host_path);
          m.readonly = true;
        }
      }
      m.source = loc->guest_path;
    }
    out.push_back(std::move(m));
  }
  return out;
}

Status CheckHostPaths(const std::vector<cri::BindMount>& mounts) {
  for (const cri::BindMount& m : mounts) {
    struct stat st {};
    if (::stat(m.host_path.c_str(), &st) != 0) {
      if (errno == ENOENT) {
        return NotFoundError(fmt::format(
            "the host path {} of the mount on {} is gone; create it again (mkdir -p {}) or run "
            "a new container without it",
            m.host_path, m.container_path, m.host_path));
      }
      return ErrnoError(errno, fmt::format("checking the host path {}", m.host_path));
    }
  }
  return OkStatus();
}

}  // namespace fun::vm

#include "lib/base/paths.h"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <vector>

namespace fun {

Os CurrentOs() {
#if defined(__APPLE__)
  return Os::kMacos;
#else
  return Os::kLinux;
#endif
}

std::string_view OsName(Os os) { return os == Os::kMacos ? "macos" : "linux"; }

namespace {

std::string Getenv(const char* name) {
  const char* v = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): read once at startup
  return v ? std::string(v) : std::string();
}

std::string StripTrailingSlashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

std::string Join(std::string_view a, std::string_view b) {
  std::string out(a);
  if (out.empty() || out.back() != '/') out.push_back('/');
  out.append(b);
  return out;
}

}  // namespace

PathsInput PathsInputFromEnvironment() {
  PathsInput in;
  in.os = CurrentOs();
  in.home = Getenv("HOME");
  if (in.home.empty()) {
    std::vector<char> buf(16384);
    passwd pw{};
    passwd* result = nullptr;
    if (getpwuid_r(getuid(), &pw, buf.data(), buf.size(), &result) == 0 && result != nullptr &&
        result->pw_dir != nullptr) {
      in.home = result->pw_dir;
    }
  }
  in.fun_home = Getenv("FUN_HOME");
  in.xdg_state_home = Getenv("XDG_STATE_HOME");
  return in;
}

std::string_view InstanceFileName(InstanceFileKind kind) {
  switch (kind) {
    case InstanceFileKind::kConfig:
      return "config.json";
    case InstanceFileKind::kHostdPid:
      return "hostd.pid";
    case InstanceFileKind::kVmPid:
      return "vm.pid";
    case InstanceFileKind::kConsoleLog:
      return "console.log";
    case InstanceFileKind::kHostdLog:
      return "hostd.log";
    case InstanceFileKind::kContainerdSock:
      return "containerd.sock";
    case InstanceFileKind::kHostdSock:
      return "hostd.sock";
    case InstanceFileKind::kPortsJson:
      return "ports.json";
    case InstanceFileKind::kDataImage:
      return "data.img";
  }
  return "unknown";
}

std::string Paths::InstanceDir(std::string_view name) const { return Join(instances_dir, name); }

std::string Paths::InstanceFile(std::string_view name, InstanceFileKind kind) const {
  return Join(InstanceDir(name), InstanceFileName(kind));
}

std::string Paths::ImageDir(std::string_view version) const { return Join(images_dir, version); }

std::string Paths::ConsoleLogForUser(std::string_view name) const {
  if (os == Os::kMacos) {
    // One linuxkit.log for the default instance, as the product promises; others get theirs.
    return Join(logs_dir, name == "default" ? std::string("linuxkit.log")
                                            : std::string(name) + "-linuxkit.log");
  }
  return InstanceFile(name, InstanceFileKind::kConsoleLog);
}

StatusOr<Paths> ResolvePaths(const PathsInput& in) {
  Paths p;
  p.os = in.os;
  p.home = StripTrailingSlashes(in.home);
  if (!in.fun_home.empty()) {
    if (in.fun_home.front() != '/') {
      return FailedPreconditionError("FUN_HOME=\"" + in.fun_home +
                                     "\" is relative: set it to an absolute path, or unset it");
    }
    p.state_dir = StripTrailingSlashes(in.fun_home);
    p.logs_dir = Join(p.state_dir, "logs");
  } else {
    if (p.home.empty() || p.home.front() != '/') {
      return FailedPreconditionError(
          "cannot find your home directory (HOME is unset or relative): set HOME, or set "
          "FUN_HOME to the directory Fun should keep its state in");
    }
    if (in.os == Os::kMacos) {
      p.state_dir = Join(p.home, "Library/Application Support/Fun");
      p.logs_dir = Join(p.home, "Library/Logs/Fun");
    } else {
      // XDG: a relative XDG_STATE_HOME is invalid and must be ignored.
      std::string base = (!in.xdg_state_home.empty() && in.xdg_state_home.front() == '/')
                             ? StripTrailingSlashes(in.xdg_state_home)
                             : Join(p.home, ".local/state");
      p.state_dir = Join(base, "fun");
      p.logs_dir = Join(p.state_dir, "logs");
    }
  }
  p.instances_dir = Join(p.state_dir, "instances");
  p.images_dir = Join(p.state_dir, "images");
  return p;
}

Status MakeDirs(const std::string& path, unsigned mode) {
  if (path.empty()) return InvalidArgumentError("MakeDirs: empty path");
  std::string cur;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t next = path.find('/', pos);
    if (next == std::string::npos) next = path.size();
    cur = path.substr(0, next);
    pos = next + 1;
    if (cur.empty()) continue;  // the leading '/'
    if (::mkdir(cur.c_str(), static_cast<mode_t>(mode)) != 0) {
      int err = errno;
      if (err != EEXIST) return ErrnoError(err, "creating directory " + cur);
      struct stat st {};
      if (::stat(cur.c_str(), &st) != 0) return ErrnoError(errno, "checking " + cur);
      if (!S_ISDIR(st.st_mode)) {
        return FailedPreconditionError(cur + " exists and is not a directory: move it away");
      }
    }
  }
  return OkStatus();
}

}  // namespace fun

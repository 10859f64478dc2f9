#include "tools/fun-vmctl/vmctl.h"

#include <sys/stat.h>
#include <sys/utsname.h>

#include <nlohmann/json.hpp>

#include "lib/base/flags.h"
#include "lib/base/instance_config.h"
#include "lib/base/version.h"

namespace fun::vmctl {
namespace {

constexpr const char kUsage[] =
    "usage: fun-vmctl COMMAND [FLAGS]\n"
    "\n"
    "Commands:\n"
    "  config [NAME]   show an instance's effective configuration (config.json over defaults)\n"
    "  paths           show where Fun keeps state and logs\n"
    "  version         show the version\n"
    "\n"
    "Every command takes --json. Not in this build yet: start, stop, restart, status, logs\n"
    "(they arrive with the VM backend).\n";

bool IsArm64() {
  struct utsname u {};
  if (::uname(&u) != 0) return false;
  std::string m = u.machine;
  return m == "arm64" || m == "aarch64";
}

int Fail(std::ostream& err, const Status& s) {
  err << "fun-vmctl: " << s.message() << "\n";
  return 1;
}

int Usage(std::ostream& err, const Status& s) {
  err << "fun-vmctl: " << s.message() << "\n";
  return 2;
}

int Version(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  bool json = false;
  FlagSet flags("fun-vmctl version");
  flags.Bool("json", &json, "print JSON");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(err, rest.status());
  if (!rest->empty()) return Usage(err, InvalidArgumentError("version takes no arguments"));
  if (json) {
    out << nlohmann::json{{"version", kVersion}, {"git_revision", kGitRevision}}.dump(2) << "\n";
  } else {
    out << "fun-vmctl " << kVersion << " (" << kGitRevision << ")\n";
  }
  return 0;
}

int ShowPaths(const std::vector<std::string>& args, const PathsInput& env, std::ostream& out,
              std::ostream& err) {
  bool json = false;
  FlagSet flags("fun-vmctl paths");
  flags.Bool("json", &json, "print JSON");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(err, rest.status());
  if (!rest->empty()) return Usage(err, InvalidArgumentError("paths takes no arguments"));
  auto paths = ResolvePaths(env);
  if (!paths.ok()) return Fail(err, paths.status());
  if (json) {
    out << nlohmann::json{{"os", OsName(paths->os)},
                          {"state_dir", paths->state_dir},
                          {"logs_dir", paths->logs_dir},
                          {"instances_dir", paths->instances_dir},
                          {"images_dir", paths->images_dir}}
               .dump(2)
        << "\n";
  } else {
    out << "state      " << paths->state_dir << "\n"
        << "logs       " << paths->logs_dir << "\n"
        << "instances  " << paths->instances_dir << "\n"
        << "images     " << paths->images_dir << "\n";
  }
  return 0;
}

int ShowConfig(const std::vector<std::string>& args, const PathsInput& env, std::ostream& out,
               std::ostream& err) {
  bool json = false;
  FlagSet flags("fun-vmctl config");
  flags.Bool("json", &json, "print JSON");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(err, rest.status());
  if (rest->size() > 1) {
    return Usage(err, InvalidArgumentError("config takes at most one instance name"));
  }
  std::string name = rest->empty() ? "default" : (*rest)[0];
  auto paths = ResolvePaths(env);
  if (!paths.ok()) return Fail(err, paths.status());

  // The name becomes a path: refuse a bad one before building any.
  if (Status s = ValidateInstanceName(name); !s.ok()) return Usage(err, s);
  InstanceConfig defaults = DefaultInstanceConfig(
      {.is_macos = env.os == Os::kMacos, .is_arm64 = IsArm64(), .home_dir = paths->home});
  defaults.name = name;

  std::string file = paths->InstanceFile(name, InstanceFileKind::kConfig);
  struct stat st{};
  bool exists = ::stat(file.c_str(), &st) == 0;
  InstanceConfig cfg = defaults;
  if (exists) {
    auto loaded = LoadInstanceConfigFile(file, defaults);
    if (!loaded.ok()) return Fail(err, loaded.status());
    if (loaded->name != name) {
      return Fail(err, FailedPreconditionError(
                           file + ": name: \"" + loaded->name + "\" does not match its directory \"" +
                           name + "\": remove the name key or make it match"));
    }
    cfg = *loaded;
  }
  if (json) {
    nlohmann::json j = ToJson(cfg);
    out << nlohmann::json{{"file", file}, {"exists", exists}, {"config", j}}.dump(2) << "\n";
  } else {
    out << "# " << file << (exists ? "" : " (not created yet: these are the defaults)") << "\n"
        << SerializeInstanceConfig(cfg) << "\n";
  }
  return 0;
}

}  // namespace

int Run(const std::vector<std::string>& args, const PathsInput& env, std::ostream& out,
        std::ostream& err) {
  if (args.empty()) {
    err << kUsage;
    return 2;
  }
  const std::string& cmd = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    out << kUsage;
    return 0;
  }
  if (cmd == "version" || cmd == "--version") return Version(rest, out, err);
  if (cmd == "paths") return ShowPaths(rest, env, out, err);
  if (cmd == "config") return ShowConfig(rest, env, out, err);
  return Usage(err, InvalidArgumentError("unknown command \"" + cmd +
                                         "\": run 'fun-vmctl --help' for the commands"));
}

}  // namespace fun::vmctl

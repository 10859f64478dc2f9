#include "lib/cri/testing/containerd_fixture.h"

#include <fmt/format.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <system_error>
#include <utility>
#include <vector>

#include "lib/base/clock.h"
#include "lib/base/files.h"
#include "lib/base/log.h"
#include "lib/base/socket.h"
#include "lib/cri/client.h"

namespace fun::cri::testing {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

namespace {

constexpr char kSocketName[] = "containerd.sock";
// containerd also listens on <socket>.ttrpc: that path must fit in sun_path (108 bytes) too.
constexpr size_t kMaxSocketPath = 107 - 6;

milliseconds Since(Clock::MonoTime t) {
  return std::chrono::duration_cast<milliseconds>(Clock::Real().MonotonicNow() - t);
}

// A TOML basic string.
std::string Toml(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

uint32_t RandomU32() {
  std::random_device rd;
  return static_cast<uint32_t>(rd());
}

Status WriteFile(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return ErrnoError(errno, "creating " + path);
  f << content;
  f.close();
  if (!f) return ErrnoError(errno, "writing " + path);
  return OkStatus();
}

// Whether the kernel mounts overlay with its lower/upper/work dirs inside `dir` (what the
// overlayfs snapshotter needs); the error says why not.
Status ProbeOverlay(const std::string& dir) {
  const std::string probe = dir + "/overlay-probe";
  for (const char* sub : {"lower", "upper", "work", "merged"}) {
    std::error_code ec;
    fs::create_directories(probe + "/" + sub, ec);
    if (ec) return InternalError(fmt::format("creating {}/{}: {}", probe, sub, ec.message()));
  }
  const std::string opts =
      fmt::format("lowerdir={0}/lower,upperdir={0}/upper,workdir={0}/work", probe);
  const std::string merged = probe + "/merged";
  Status result = OkStatus();
  if (::mount("overlay", merged.c_str(), "overlay", 0, opts.c_str()) != 0) {
    result = ErrnoError(errno, "mount -t overlay in " + dir);
  } else {
    ::umount2(merged.c_str(), MNT_DETACH);
  }
  std::error_code ec;
  fs::remove_all(probe, ec);
  return result;
}

// Undoes the octal escapes of /proc/self/mountinfo ("\040" is a space).
std::string UnescapeMountPath(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7') {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Lazily unmounts everything mounted at or under `dir`, deepest (latest) first.
void UnmountUnder(const std::string& dir) {
  std::ifstream f("/proc/self/mountinfo");
  std::vector<std::string> mounts;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point;
    if (!(fields >> id >> parent >> devno >> root >> mount_point)) continue;
    std::string path = UnescapeMountPath(mount_point);
    if (path == dir || path.rfind(dir + "/", 0) == 0) mounts.push_back(path);
  }
  for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) {
    if (::umount2(it->c_str(), MNT_DETACH) != 0) {
      FUN_LOG(Warning, "containerd fixture: umount {}: {}", *it, ErrnoError(errno, "umount2"));
    }
  }
}

// The argv of every process, by pid (processes that vanish meanwhile are skipped).
std::vector<std::pair<pid_t, std::vector<std::string>>> Processes() {
  std::vector<std::pair<pid_t, std::vector<std::string>>> out;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() ||
        !std::all_of(name.begin(), name.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
      continue;
    }
    std::ifstream f(e.path() / "cmdline", std::ios::binary);
    std::vector<std::string> argv;
    for (std::string arg; std::getline(f, arg, '\0');) argv.push_back(arg);
    if (!argv.empty()) out.emplace_back(static_cast<pid_t>(std::stol(name)), std::move(argv));
  }
  return out;
}

// Shims outlive containerd on purpose (containers keep running across a containerd restart).
// Those of one containerd are the containerd-shim* processes started with "-address <socket>".
void KillShimsOf(const std::string& socket_path) {
  for (const auto& [pid, argv] : Processes()) {
    if (argv[0].find("containerd-shim") == std::string::npos) continue;
    for (size_t i = 0; i + 1 < argv.size(); ++i) {
      if (argv[i] == "-address" && argv[i + 1] == socket_path) {
        FUN_LOG(Warning, "containerd fixture: killing leftover shim pid {}", pid);
        ::kill(pid, SIGKILL);
        break;
      }
    }
  }
}

// Fixture dirs whose test process died without cleaning up (a crash, a ctest timeout): their
// containerd (recognised by its --config path, so a reused pid is never hit) and shims are
// killed, their mounts undone, the dirs removed. Dirs of live tests are left alone.
void SweepStaleFixtures(const std::string& parent) {
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(parent, ec)) {
    const std::string dir = e.path().string();
    if (e.path().filename().string().rfind("fun-ctd.", 0) != 0) continue;
    std::ifstream owner_file(dir + "/owner.pid");
    long owner = 0;
    if (!(owner_file >> owner) || owner <= 0) continue;  // being set up right now, or not ours
    if (::kill(static_cast<pid_t>(owner), 0) == 0 || errno == EPERM) continue;  // owner alive
    const std::string config = dir + "/config.toml";
    for (const auto& [pid, argv] : Processes()) {
      if (std::find(argv.begin(), argv.end(), config) != argv.end()) {
        FUN_LOG(Warning, "containerd fixture: killing containerd pid {} left by dead test {}", pid,
                owner);
        ::kill(pid, SIGKILL);
      }
    }
    KillShimsOf(dir + "/" + kSocketName);
    UnmountUnder(dir);
    fs::remove_all(dir, ec);
  }
}

}  // namespace

Status ContainerdFixture::CanRun(const Options& options) {
  if (::geteuid() != 0) {
    return FailedPreconditionError(
        fmt::format("containerd needs root, and this test runs as uid {}", ::geteuid()));
  }
  if (::access(options.containerd.c_str(), X_OK) != 0) {
    return FailedPreconditionError(fmt::format("{} is not there (apt-get install containerd): {}",
                                               options.containerd,
                                               ErrnoError(errno, "access").message()));
  }
  return OkStatus();
}

StatusOr<std::unique_ptr<ContainerdFixture>> ContainerdFixture::Create(Options options) {
  FUN_RETURN_IF_ERROR(CanRun(options));
  std::unique_ptr<ContainerdFixture> f(new ContainerdFixture(std::move(options)));
  FUN_RETURN_IF_ERROR(f->Prepare());
  if (f->options_.launch) {
    FUN_RETURN_IF_ERROR(f->Launch());
    FUN_RETURN_IF_ERROR(f->WaitUntilUp());
  }
  return f;
}

Status ContainerdFixture::Prepare() {
  std::string parent = options_.parent_dir;
  if (parent.empty()) {
    const char* tmpdir = std::getenv("TMPDIR");  // NOLINT(concurrency-mt-unsafe): tests
    parent = "/tmp";
    if (tmpdir != nullptr && tmpdir[0] == '/' &&
        std::string_view(tmpdir).size() + std::string_view("/fun-ctd.XXXXXX/").size() +
                std::string_view(kSocketName).size() <=
            kMaxSocketPath) {
      parent = tmpdir;
    }
  }
  SweepStaleFixtures(parent);
  std::string tmpl = parent + "/fun-ctd.XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return ErrnoError(errno, "mkdtemp " + tmpl);
  dir_ = tmpl;
  FUN_RETURN_IF_ERROR(WriteFile(dir_ + "/owner.pid", fmt::format("{}\n", ::getpid())));
  socket_path_ = dir_ + "/" + kSocketName;
  config_path_ = dir_ + "/config.toml";
  log_path_ = dir_ + "/containerd.log";
  cni_conf_dir_ = dir_ + "/cni";
  registry_config_dir_ = dir_ + "/certs.d";
  if (socket_path_.size() > kMaxSocketPath) {
    return InvalidArgumentError(fmt::format(
        "containerd socket path {} is {} bytes; with its .ttrpc twin it must stay under 108: "
        "use a shorter parent_dir",
        socket_path_, socket_path_.size()));
  }
  std::error_code ec;
  for (const std::string& d : {cni_conf_dir_, registry_config_dir_}) {
    fs::create_directories(d, ec);
    if (ec) return InternalError(fmt::format("creating {}: {}", d, ec.message()));
  }
  for (const std::string& host : options_.plain_http_registries) {
    FUN_RETURN_IF_ERROR(TrustPlainHttpRegistry(host));
  }

  snapshotter_ = options_.snapshotter;
  if (snapshotter_.empty()) {
    Status overlay = ProbeOverlay(dir_);
    snapshotter_ = overlay.ok() ? "overlayfs" : "native";
    if (!overlay.ok()) {
      FUN_LOG(Warning, "containerd fixture: overlay unavailable ({}); using the native snapshotter",
              overlay);
    }
  }
  return WriteConfig();
}

Status ContainerdFixture::WriteConfig() {
  const std::string cri = "plugins.\"io.containerd.grpc.v1.cri\"";
  std::vector<std::string> disabled = {
      "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
      "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"};
  if (!options_.enable_cri) disabled.emplace_back("io.containerd.grpc.v1.cri");
  std::string disabled_list;
  for (const std::string& p : disabled) {
    disabled_list += (disabled_list.empty() ? "" : ", ") + Toml(p);
  }

  std::string c;
  c += "# Written by the Fun containerd test fixture.\n";
  c += "version = 2\n";
  c += "root = " + Toml(dir_ + "/root") + "\n";
  c += "state = " + Toml(dir_ + "/state") + "\n";
  c += "disabled_plugins = [" + disabled_list + "]\n\n";
  c += "[grpc]\n";
  c += "  address = " + Toml(socket_path_) + "\n\n";
  c += "[plugins.\"io.containerd.internal.v1.opt\"]\n";
  c += "  path = " + Toml(dir_ + "/opt") + "\n\n";
  c += "[" + cri + "]\n";
  c += "  stream_server_address = \"127.0.0.1\"\n";
  c += "  stream_server_port = \"0\"\n";
  c += "  netns_mounts_under_state_dir = true\n";
  // CRI gives every pod sandbox oom_score_adj -998, and runc fails to start it ("can't get
  // final child's PID from pipe") where the kernel refuses lowering it, as on the CI machines
  // (measured: runc alone with oomScoreAdj -998 gets EACCES on /proc/self/oom_score_adj).
  // Restricting the score to containerd's own keeps pods working there and changes nothing
  // that tests observe.
  c += "  restrict_oom_score_adj = true\n";
  if (!options_.sandbox_image.empty()) {
    c += "  sandbox_image = " + Toml(options_.sandbox_image) + "\n";
  }
  c += "  [" + cri + ".containerd]\n";
  c += "    snapshotter = " + Toml(snapshotter_) + "\n";
  c += "    default_runtime_name = \"runc\"\n";
  c += "    [" + cri + ".containerd.runtimes.runc]\n";
  c += "      runtime_type = \"io.containerd.runc.v2\"\n";
  c += "  [" + cri + ".cni]\n";
  c += "    bin_dir = \"/usr/lib/cni\"\n";
  c += "    conf_dir = " + Toml(cni_conf_dir_) + "\n";
  c += "  [" + cri + ".registry]\n";
  c += "    config_path = " + Toml(registry_config_dir_) + "\n";
  return WriteFile(config_path_, c);
}

Status ContainerdFixture::Launch() {
  if (process_ != nullptr) return FailedPreconditionError("containerd fixture: already running");
  Command cmd{.program = options_.containerd,
              .args = {"--config", config_path_, "--log-level", "info"},
              .capture_output = false};
  cmd.stdout_file = log_path_;
  cmd.stderr_file = log_path_;
  cmd.kill_grace = options_.stop_grace;
  launched_at_ = Clock::Real().MonotonicNow();
  socket_up_after_ = ready_after_ = milliseconds(0);
  FUN_ASSIGN_OR_RETURN(process_, ProcessRunner::Default().Start(cmd));
  FUN_LOG(Info, "containerd fixture: started {} (pid {}) in {}", options_.containerd,
          process_->pid(), dir_);
  return OkStatus();
}

Status ContainerdFixture::WaitUntilUp() {
  if (process_ == nullptr) return FailedPreconditionError("containerd fixture: not launched");
  Clock& clock = Clock::Real();
  const Clock::MonoTime deadline = launched_at_ + options_.start_timeout;
  auto exited = [this](std::string_view when) {
    StatusOr<ProcessResult> r = process_->Wait(milliseconds(1000));
    std::string how = r.ok() ? r->Describe() : r.status().ToString();
    process_.reset();
    return UnavailableError(
        fmt::format("containerd {} {}; its log ({}) ends:\n{}", how, when, log_path_, LogTail()));
  };

  const SocketAddress addr{.kind = SocketAddress::Kind::kUnix, .path = socket_path_};
  while (!Connect(addr).ok()) {
    if (!process_->Running()) return exited("before its socket was up");
    if (clock.MonotonicNow() >= deadline) {
      return DeadlineExceededError(
          fmt::format("containerd's socket {} not up after {} ms; its log ends:\n{}", socket_path_,
                      options_.start_timeout.count(), LogTail()));
    }
    clock.SleepFor(milliseconds(10));
  }
  socket_up_after_ = Since(launched_at_);
  if (!options_.enable_cri) {
    ready_after_ = socket_up_after_;
    return OkStatus();
  }

  FUN_ASSIGN_OR_RETURN(std::unique_ptr<CriClient> cri, CriClient::Connect(socket_path_));
  std::string last = "no answer";
  const auto remaining = std::max(
      milliseconds(1), std::chrono::duration_cast<milliseconds>(deadline - clock.MonotonicNow()));
  StatusOr<bool> ready = cri->WaitUntilReady(
      {.timeout = remaining,
       .poll_interval = milliseconds(20),
       .on_progress = [&last](const ReadyProgress& p) { last = p.Describe(); }});
  if (!ready.ok()) {
    return std::move(ready).status().WithContext(
        fmt::format("containerd fixture; its log ends:\n{}\n", LogTail()));
  }
  if (!*ready) {
    if (!process_->Running()) return exited("before CRI was ready");
    return DeadlineExceededError(
        fmt::format("containerd's CRI not ready after {} ms ({}); its log ends:\n{}",
                    options_.start_timeout.count(), last, LogTail()));
  }
  ready_after_ = Since(launched_at_);
  FUN_LOG(Info, "containerd fixture: socket up after {} ms, CRI ready after {} ms",
          socket_up_after_.count(), ready_after_.count());
  return OkStatus();
}

Status ContainerdFixture::Signal(int sig) {
  if (process_ == nullptr) return FailedPreconditionError("containerd does not run");
  return process_->Signal(sig);
}

Status ContainerdFixture::Stop() {
  Status result = OkStatus();
  if (process_ != nullptr) {
    result = process_->Terminate(options_.stop_grace);
    process_.reset();
  }
  KillShimsOf(socket_path_);
  return result;
}

void ContainerdFixture::Cleanup() {
  if (dir_.empty()) return;
  if (Status s = Stop(); !s.ok()) FUN_LOG(Warning, "containerd fixture: stopping: {}", s);
  UnmountUnder(dir_);
  std::error_code ec;
  fs::remove_all(dir_, ec);
  if (ec) FUN_LOG(Warning, "containerd fixture: removing {}: {}", dir_, ec.message());
}

ContainerdFixture::~ContainerdFixture() { Cleanup(); }

StatusOr<std::string> ContainerdFixture::WriteCniConfig(const CniNetworkOptions& network) {
  const uint32_t r = RandomU32();
  const std::string bridge =
      network.bridge.empty() ? fmt::format("funbr{:08x}", r) : network.bridge;
  const std::string subnet = network.subnet.empty()
                                 ? fmt::format("10.{}.{}.0/24", 100 + (r >> 8) % 150, r % 256)
                                 : network.subnet;
  const std::string conf = fmt::format(
      R"({{
  "cniVersion": "1.0.0",
  "name": "{}",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{}",
      "isGateway": true,
      "ipMasq": {},
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{"subnet": "{}"}}]],
        "routes": [{{"dst": "0.0.0.0/0"}}]
      }}
    }}{}
  ]
}}
)",
      network.network_name, bridge, network.as_in_vm ? "false" : "true", subnet,
      network.as_in_vm
          ? ""
          : ",\n    {\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}}");
  // go-cni loads only *.conf, *.conflist and *.json: the temporary name is ignored until the
  // rename makes the whole file appear at once.
  const std::string path = cni_conf_dir_ + "/" + network.file_name;
  const std::string tmp = path + ".tmp";
  FUN_RETURN_IF_ERROR(WriteFile(tmp, conf));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return ErrnoError(errno, fmt::format("rename {} {}", tmp, path));
  }
  return path;
}

Status ContainerdFixture::TrustPlainHttpRegistry(std::string_view host) {
  if (host.empty() || host.find_first_of("/ \t\r\n\"\\") != std::string_view::npos || host == "." ||
      host == "..") {
    return InvalidArgumentError(
        fmt::format("registry host '{}': expected HOST:PORT, e.g. 127.0.0.1:5000", host));
  }
  // containerd 1.6 looks for <config_path>/<host as in the image reference>/hosts.toml.
  const std::string dir = fmt::format("{}/{}", registry_config_dir_, host);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return InternalError(fmt::format("creating {}: {}", dir, ec.message()));
  const std::string url = fmt::format("http://{}", host);
  const std::string toml = fmt::format(
      "# Written by the Fun containerd test fixture: {0} over plain HTTP.\n"
      "server = {1}\n\n"
      "[host.{1}]\n"
      "  capabilities = [\"pull\", \"resolve\"]\n",
      host, Toml(url));
  const std::string path = dir + "/hosts.toml";
  const std::string tmp = path + ".tmp";
  FUN_RETURN_IF_ERROR(WriteFile(tmp, toml));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return ErrnoError(errno, fmt::format("rename {} {}", tmp, path));
  }
  return OkStatus();
}

std::string TailOfLog(const std::string& path, size_t max_lines) {
  if (!std::ifstream(path)) return "(no log at " + path + ")";
  return TailFile(path, max_lines);
}

std::string ContainerdFixture::LogTail(size_t max_lines) const {
  return TailOfLog(log_path_, max_lines);
}

}  // namespace fun::cri::testing

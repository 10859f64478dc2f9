#include "lib/cri/testing/registry_fixture.h"

#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <utility>
#include <vector>

#include "lib/base/clock.h"
#include "lib/base/log.h"
#include "lib/base/socket.h"
#include "lib/cri/testing/containerd_fixture.h"

#ifndef FUN_IMAGES_DIR
#define FUN_IMAGES_DIR ""
#endif
#ifndef FUN_REGISTRY_SCRIPT
#define FUN_REGISTRY_SCRIPT ""
#endif

namespace fun::cri::testing {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

namespace {

constexpr char kDirPrefix[] = "fun-reg.";
constexpr size_t kMaxReplyBytes = 1 << 20;

milliseconds Since(Clock::MonoTime t) {
  return std::chrono::duration_cast<milliseconds>(Clock::Real().MonotonicNow() - t);
}

Status WriteFile(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return ErrnoError(errno, "creating " + path);
  f << content;
  f.close();
  if (!f) return ErrnoError(errno, "writing " + path);
  return OkStatus();
}

// A port on 127.0.0.1 that nothing listens on right now (the kernel's pick for port 0). Another
// process may take it before the registry binds: Launch() notices and the caller retries.
StatusOr<uint16_t> FreeLoopbackPort() {
  const SocketAddress any{.kind = SocketAddress::Kind::kTcp, .host = "127.0.0.1", .port = 0};
  FUN_ASSIGN_OR_RETURN(UniqueFd fd, Listen(any));
  FUN_ASSIGN_OR_RETURN(std::string bound, LocalAddress(fd.get()));
  FUN_ASSIGN_OR_RETURN(SocketAddress addr, ParseSocketAddress(bound));
  return addr.port;
}

// Pids of the processes whose argv contains `arg` (processes that vanish meanwhile are skipped).
std::vector<pid_t> ProcessesWithArg(const std::string& arg) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() ||
        !std::all_of(name.begin(), name.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
      continue;
    }
    std::ifstream f(e.path() / "cmdline", std::ios::binary);
    for (std::string a; std::getline(f, a, '\0');) {
      if (a == arg) {
        out.push_back(static_cast<pid_t>(std::stol(name)));
        break;
      }
    }
  }
  return out;
}

// Fixture dirs whose test process died without cleaning up: their registry (recognised by its
// config path, so a reused pid is never hit) is killed and the dirs removed. Dirs of live
// tests are left alone.
void SweepStaleFixtures(const std::string& parent) {
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(parent, ec)) {
    if (e.path().filename().string().rfind(kDirPrefix, 0) != 0) continue;
    const std::string dir = e.path().string();
    std::ifstream owner_file(dir + "/owner.pid");
    long owner = 0;
    if (!(owner_file >> owner) || owner <= 0) continue;  // being set up right now, or not ours
    if (::kill(static_cast<pid_t>(owner), 0) == 0 || errno == EPERM) continue;  // owner alive
    for (pid_t pid : ProcessesWithArg(dir + "/config.yml")) {
      FUN_LOG(Warning, "registry fixture: killing registry pid {} left by dead test {}", pid,
              owner);
      ::kill(pid, SIGKILL);
    }
    fs::remove_all(dir, ec);
  }
}

}  // namespace

Status RegistryFixture::CanRun(const Options& options) {
  const std::string script =
      options.registry_script.empty() ? FUN_REGISTRY_SCRIPT : options.registry_script;
  const std::string images = options.images_dir.empty() ? FUN_IMAGES_DIR : options.images_dir;
  const char* path_env = std::getenv("PATH");  // NOLINT(concurrency-mt-unsafe): tests
  const std::string path = path_env != nullptr ? path_env : "/usr/bin:/bin";
  for (const char* program : {"docker-registry", "skopeo", "curl"}) {
    if (!FindProgram(program, path).ok()) {
      return FailedPreconditionError(
          fmt::format("{} is not installed (run ci/setup.sh: packages docker-registry, skopeo, "
                      "curl)",
                      program));
    }
  }
  if (script.empty() || ::access(script.c_str(), X_OK) != 0) {
    return FailedPreconditionError(
        fmt::format("the registry script '{}' is not there or not executable", script));
  }
  if (options.seed && (images.empty() || !fs::exists(images + "/images.txt"))) {
    return FailedPreconditionError(
        fmt::format("no images in '{}' (build them: cmake --build <build> --target fun_images, or "
                    "images/build.sh --out {})",
                    images, images.empty() ? "<dir>" : images));
  }
  return OkStatus();
}

StatusOr<std::unique_ptr<RegistryFixture>> RegistryFixture::Create(Options options) {
  if (options.registry_script.empty()) options.registry_script = FUN_REGISTRY_SCRIPT;
  if (options.images_dir.empty()) options.images_dir = FUN_IMAGES_DIR;
  FUN_RETURN_IF_ERROR(CanRun(options));
  std::unique_ptr<RegistryFixture> f(new RegistryFixture(std::move(options)));
  FUN_RETURN_IF_ERROR(f->Prepare());
  // The free port may be taken between our probe and the registry's bind: try a few.
  constexpr int kAttempts = 5;
  for (int attempt = 1;; ++attempt) {
    bool port_taken = false;
    Status launched = f->Launch(&port_taken);
    if (launched.ok()) break;
    if (!port_taken || attempt == kAttempts) return launched;
    FUN_LOG(Info, "registry fixture: port {} was taken; trying another", f->port_);
  }
  if (f->options_.seed) FUN_RETURN_IF_ERROR(f->Seed());
  return f;
}

Status RegistryFixture::Prepare() {
  std::string parent = options_.parent_dir;
  if (parent.empty()) {
    const char* tmpdir = std::getenv("TMPDIR");  // NOLINT(concurrency-mt-unsafe): tests
    parent = (tmpdir != nullptr && tmpdir[0] == '/') ? tmpdir : "/tmp";
  }
  SweepStaleFixtures(parent);
  std::string tmpl = parent + "/" + kDirPrefix + "XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return ErrnoError(errno, "mkdtemp " + tmpl);
  dir_ = tmpl;
  log_path_ = dir_ + "/registry.log";
  return WriteFile(dir_ + "/owner.pid", fmt::format("{}\n", ::getpid()));
}

Status RegistryFixture::Launch(bool* port_taken) {
  *port_taken = false;
  FUN_ASSIGN_OR_RETURN(port_, FreeLoopbackPort());
  Command cmd{.program = options_.registry_script,
              .args = {"run", "--dir", dir_, "--port", std::to_string(port_)},
              .capture_output = false};
  cmd.stdout_file = log_path_;
  cmd.stderr_file = log_path_;
  cmd.kill_grace = options_.stop_grace;
  Clock& clock = Clock::Real();
  const Clock::MonoTime started = clock.MonotonicNow();
  FUN_ASSIGN_OR_RETURN(process_, ProcessRunner::Default().Start(cmd));
  FUN_LOG(Info, "registry fixture: started docker-registry (pid {}) on 127.0.0.1:{} in {}",
          process_->pid(), port_, dir_);

  const Clock::MonoTime deadline = started + options_.start_timeout;
  Status last = UnavailableError("not tried yet");
  while (true) {
    StatusOr<HttpReply> reply = Get("/v2/");
    if (reply.ok() && reply->status == 200) break;
    last = reply.ok() ? UnavailableError(fmt::format("HTTP {}: {}", reply->status, reply->body))
                      : reply.status();
    if (!process_->Running()) {
      StatusOr<ProcessResult> r = process_->Wait(milliseconds(1000));
      const std::string how = r.ok() ? r->Describe() : r.status().ToString();
      process_.reset();
      const std::string log = LogTail();
      *port_taken = log.find("address already in use") != std::string::npos;
      return UnavailableError(
          fmt::format("docker-registry {} before 127.0.0.1:{}/v2/ answered; its log ({}) ends:\n{}",
                      how, port_, log_path_, log));
    }
    if (clock.MonotonicNow() >= deadline) {
      return DeadlineExceededError(
          fmt::format("docker-registry: 127.0.0.1:{}/v2/ did not answer within {} ms (last: {}); "
                      "its log ends:\n{}",
                      port_, options_.start_timeout.count(), last, LogTail()));
    }
    clock.SleepFor(milliseconds(20));
  }
  up_after_ = Since(started);
  return OkStatus();
}

Status RegistryFixture::Seed() {
  const Clock::MonoTime started = Clock::Real().MonotonicNow();
  Command cmd{.program = options_.registry_script,
              .args = {"push", "--port", std::to_string(port_), "--images", options_.images_dir}};
  cmd.timeout = options_.push_timeout;
  FUN_ASSIGN_OR_RETURN(ProcessResult result, ProcessRunner::Default().Run(cmd));
  if (Status s = CheckExit(cmd, result); !s.ok()) {
    return std::move(s).WithContext(fmt::format("seeding the registry ({}{}); its log ends:\n{}\n",
                                                result.stderr_data, result.stdout_data, LogTail()));
  }
  seeded_in_ = Since(started);
  FUN_LOG(Info, "registry fixture: /v2/ up after {} ms, images pushed in {} ms", up_after_.count(),
          seeded_in_.count());
  return OkStatus();
}

StatusOr<HttpReply> RegistryFixture::Get(std::string_view path) const {
  const SocketAddress addr{.kind = SocketAddress::Kind::kTcp, .host = "127.0.0.1", .port = port_};
  FUN_ASSIGN_OR_RETURN(UniqueFd fd, Connect(addr));
  FUN_RETURN_IF_ERROR(WriteAll(
      fd.get(), fmt::format("GET {} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", path, port_)));
  std::string raw;
  char buf[16384];
  while (raw.size() <= kMaxReplyBytes) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, "reading the registry's reply");
    if (n == 0) break;
    raw.append(buf, static_cast<size_t>(n));
  }
  // "HTTP/1.1 200 OK\r\n...\r\n\r\nbody"
  HttpReply reply;
  const size_t sp = raw.find(' ');
  if (raw.rfind("HTTP/", 0) != 0 || sp == std::string::npos || raw.size() < sp + 4 ||
      std::from_chars(raw.data() + sp + 1, raw.data() + sp + 4, reply.status).ec != std::errc()) {
    return DataLossError(fmt::format("GET {}: not an HTTP reply: '{}'", path, raw.substr(0, 80)));
  }
  const size_t body = raw.find("\r\n\r\n");
  if (body != std::string::npos) reply.body = raw.substr(body + 4);
  return reply;
}

std::string RegistryFixture::host() const { return fmt::format("127.0.0.1:{}", port_); }

std::string RegistryFixture::Ref(std::string_view repo_tag) const {
  return fmt::format("{}/{}", host(), repo_tag);
}

Status RegistryFixture::Stop() {
  if (process_ == nullptr) return OkStatus();
  Status result = process_->Terminate(options_.stop_grace);
  process_.reset();
  return result;
}

void RegistryFixture::Cleanup() {
  if (dir_.empty()) return;
  if (Status s = Stop(); !s.ok()) FUN_LOG(Warning, "registry fixture: stopping: {}", s);
  std::error_code ec;
  fs::remove_all(dir_, ec);
  if (ec) FUN_LOG(Warning, "registry fixture: removing {}: {}", dir_, ec.message());
}

RegistryFixture::~RegistryFixture() { Cleanup(); }

std::string RegistryFixture::LogTail(size_t max_lines) const {
  return TailOfLog(log_path_, max_lines);
}

}  // namespace fun::cri::testing

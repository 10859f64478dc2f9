#include "tools/fun/fun.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "lib/base/clock.h"
#include "lib/base/flags.h"
#include "lib/base/instance_config.h"
#include "lib/base/log.h"
#include "lib/base/progress.h"
#include "lib/base/unique_fd.h"
#include "lib/base/version.h"
#include "lib/cri/client.h"
#include "lib/cri/engine.h"
#include "lib/cri/exec_stream.h"
#include "lib/cri/image_ref.h"
#include "lib/cri/log_line.h"
#include "lib/cri/pull_progress.h"
#include "lib/cri/stream_codec.h"
#include "lib/net/agent_client.h"
#include "lib/net/port_check.h"
#include "lib/vm/bind_mounts.h"
#include "lib/vm/instance.h"
#include "lib/vm/instance_agent.h"
#include "lib/vm/instance_state.h"
#include "lib/vm/port_publisher.h"
#include "tools/fun-vmctl/vmctl.h"
#include "tools/fun/terminal.h"

namespace fun::cli {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr const char kUsage[] =
    "usage: fun [--host NAME|native|unix:PATH] [--log-root DIR] [--debug] COMMAND [ARGS]\n"
    "\n"
    "Run Linux containers in Fun's VM, with Docker's commands. The first command starts the VM.\n"
    "\n"
    "Containers:\n"
    "  run [-d] [-i] [-t] [--rm] [--name N] [-e K=V]... [-w DIR] [--entrypoint E] [--user U]\n"
    "      [--network bridge|host] [--pid host] [--privileged] [-p "
    "[HOSTIP:]HOSTPORT:PORT[/udp]]...\n"
    "      [-v HOSTPATH:CTRPATH[:ro]]... IMAGE [CMD...]\n"
    "                  start a container; in the foreground, print its output and exit with its "
    "code\n"
    "                  (-v: bind-mount an existing host folder or file; in the VM it must be\n"
    "                  under a shared folder, \"shares\" in the instance's config.json)\n"
    "  start CONTAINER...         run stopped containers again, as they were run\n"
    "  ps [-a] [-q]    running containers (-a: all)\n"
    "  stop [-t S] CONTAINER...   SIGTERM, then SIGKILL after S seconds (default 10)\n"
    "  rm [-f] CONTAINER...       remove (-f: a running one too)\n"
    "  logs [-f] [--tail N] CONTAINER\n"
    "  exec [-i] [-t] CONTAINER CMD [ARG...]   run a command in a running container\n"
    "                  (-i: pass stdin; -t: a terminal; -it: an interactive shell)\n"
    "  inspect CONTAINER...       everything known about a container, as JSON\n"
    "Images:\n"
    "  pull IMAGE      images [-q]      rmi IMAGE...\n"
    "Other:\n"
    "  version         info (containerd and the runtime's readiness)\n"
    "\n"
    "ps, images, version and info take --json. Where: --host, else $FUN_HOST, else the VM\n"
    "instance \"default\"; \"native\" is this host's containerd (Linux).\n";

// Where the containers are.
struct Target {
  std::string description;  // "instance default", "native containerd", "unix:/x.sock"
  std::string socket;
  std::string instance;      // a VM instance name; "" for native/unix
  std::string log_root;      // where containerd writes logs
  bool local_files = false;  // log files are readable here (not in a VM)
  PathsInput env_paths;      // to find a VM instance's agent
};

struct Context {
  const Environment& env;
  std::ostream& out;
  std::ostream& err;
  std::string host;
  std::string log_root;
};

int Fail(std::ostream& err, const Status& s) {
  err << "fun: " << s.message() << "\n";
  return 1;
}

int Usage(std::ostream& err, const Status& s) {
  err << "fun: " << s.message() << "\n";
  return 2;
}

StatusOr<Target> ResolveTarget(const Context& c) {
  std::string host = !c.host.empty()           ? c.host
                     : !c.env.fun_host.empty() ? c.env.fun_host
                                               : "default";
  Target t;
  if (host == "native") {
    t.description = "native containerd";
    t.socket = "/run/containerd/containerd.sock";
    t.log_root = "/var/log/fun";
    t.local_files = true;
  } else if (host.rfind("unix:", 0) == 0) {
    t.socket = host.substr(5);
    if (t.socket.empty()) {
      return InvalidArgumentError(
          "--host unix: needs a socket path (unix:/path/to/containerd.sock)");
    }
    t.description = host;
    t.log_root = "/var/log/fun";
    t.local_files = true;
  } else {
    Status valid = ValidateInstanceName(host);
    if (!valid.ok()) {
      return InvalidArgumentError(fmt::format(
          "--host/FUN_HOST \"{:.60}\" is neither an instance name, native, nor unix:PATH ({})",
          host, valid.message()));
    }
    FUN_ASSIGN_OR_RETURN(Paths paths, ResolvePaths(c.env.paths));
    t.instance = host;
    t.description = "instance " + host;
    t.socket = paths.InstanceFile(host, InstanceFileKind::kContainerdSock);
    // On the VM's data disk, so logs survive a VM restart like the containers' images do.
    t.log_root = "/var/lib/containerd/fun-logs";
  }
  if (!c.log_root.empty()) t.log_root = c.log_root;
  t.env_paths = c.env.paths;
  return t;
}

// The engine for the target; a VM instance is started first (with a spinner) when it does not
// run yet: "on first run, the VM is configured and started".
struct Session {
  Target target;
  std::unique_ptr<cri::CriClient> cri;
  std::unique_ptr<cri::Engine> engine;
};

StatusOr<Session> Open(const Context& c) {
  Session s;
  FUN_ASSIGN_OR_RETURN(s.target, ResolveTarget(c));
  if (!s.target.instance.empty()) {
    FUN_ASSIGN_OR_RETURN(Paths paths, ResolvePaths(c.env.paths));
    vm::InstanceStatus st = vm::GetInstanceStatus(paths, s.target.instance);
    if (st.phase != "running") {
      Spinner spinner(c.err, c.env.stderr_is_terminal, Clock::Real());
      spinner.Update(fmt::format("starting {}", s.target.instance));
      StatusOr<std::string> started =
          vmctl::StartInstance(paths, s.target.instance, vmctl::StartOptions{}, spinner);
      if (!started.ok()) {
        spinner.Done("");
        return started.status();
      }
      spinner.Done(*started);
    }
  }
  FUN_ASSIGN_OR_RETURN(s.cri, cri::CriClient::Connect(s.target.socket));
  // In a VM, fun-hostd publishes -p ports on this host; natively, CNI's portmap does.
  s.engine = std::make_unique<cri::Engine>(
      s.cri.get(), cri::EngineOptions{.log_root = s.target.log_root,
                                      .ports_via_cri = s.target.instance.empty()});
  return s;
}

// --- formatting ---------------------------------------------------------------------------

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "3 seconds", "About a minute", "5 minutes", "2 hours", "3 days" (Docker's wording).
std::string HumanDuration(int64_t ns) {
  const int64_t s = ns / 1'000'000'000;
  if (s < 1) return "Less than a second";
  if (s < 60) return fmt::format("{} second{}", s, s == 1 ? "" : "s");
  const int64_t m = s / 60;
  if (m == 1) return "About a minute";
  if (m < 60) return fmt::format("{} minutes", m);
  const int64_t h = m / 60;
  if (h == 1) return "About an hour";
  if (h < 48) return fmt::format("{} hours", h);
  return fmt::format("{} days", h / 24);
}

std::string StatusText(const cri::Container& c) {
  const int64_t now = NowNs();
  switch (c.state) {
    case cri::ContainerState::kCreated:
      return "Created";
    case cri::ContainerState::kRunning:
      return "Up " + HumanDuration(now - c.started_at_ns);
    case cri::ContainerState::kExited:
      return fmt::format("Exited ({}) {} ago", c.exit_code, HumanDuration(now - c.finished_at_ns));
    case cri::ContainerState::kUnknown:
      break;
  }
  return "Unknown";
}

std::string Quote(const std::vector<std::string>& cmd) {
  std::string s;
  for (const std::string& a : cmd) {
    if (!s.empty()) s += ' ';
    s += a;
  }
  return s;
}

std::string Cut(std::string s, size_t n) {
  if (s.size() > n) s = s.substr(0, n - 1) + "…";
  return s;
}

std::string Rfc3339(int64_t ns) {
  if (ns == 0) return "";
  const time_t secs = static_cast<time_t>(ns / 1'000'000'000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ns % 1'000'000'000);
}

// Docker's PORTS column: "127.0.0.1:8080->80/tcp, [::1]:53->53/udp".
std::string PortsText(const std::vector<cri::PortMapping>& ports) {
  std::string out;
  for (const cri::PortMapping& p : ports) {
    if (!out.empty()) out += ", ";
    const std::string ip = p.host_ip.empty() ? "127.0.0.1" : p.host_ip;
    out += fmt::format("{}:{}->{}/{}", ip.find(':') != std::string::npos ? "[" + ip + "]" : ip,
                       p.host_port, p.container_port,
                       p.protocol == cri::PortMapping::Protocol::kUdp ? "udp" : "tcp");
  }
  return out;
}

nlohmann::json PortsJsonOf(const std::vector<cri::PortMapping>& ports) {
  nlohmann::json j = nlohmann::json::array();
  for (const cri::PortMapping& p : ports) {
    j.push_back({{"host_ip", p.host_ip.empty() ? "127.0.0.1" : p.host_ip},
                 {"host_port", p.host_port},
                 {"container_port", p.container_port},
                 {"protocol", p.protocol == cri::PortMapping::Protocol::kUdp ? "udp" : "tcp"}});
  }
  return j;
}

nlohmann::json ToJson(const cri::ContainerInfo& i) {
  const cri::Container& c = i.container;
  // Docker's "Mounts": source is the folder on this machine; vm_path is where containerd
  // mounted it from in a VM, when that differs.
  nlohmann::json mounts = nlohmann::json::array();
  for (const cri::BindMount& m : i.mounts) {
    nlohmann::json j = {{"type", "bind"},
                        {"source", m.host_path},
                        {"destination", m.container_path},
                        {"mode", m.readonly ? "ro" : "rw"},
                        {"rw", !m.readonly},
                        {"propagation", "private"}};
    if (m.source != m.host_path) j["vm_path"] = m.source;
    mounts.push_back(std::move(j));
  }
  return {{"id", c.id},
          {"name", i.name},
          {"image", c.image},
          {"image_id", c.image_ref},
          {"command", i.command},
          {"state", cri::ContainerStateName(c.state)},
          {"status", StatusText(c)},
          {"created", Rfc3339(c.created_at_ns)},
          {"started", Rfc3339(c.started_at_ns)},
          {"finished", Rfc3339(c.finished_at_ns)},
          {"exit_code", c.exit_code},
          {"reason", c.reason},
          {"message", c.message},
          {"pod_id", i.pod_id},
          {"ip", i.pod_ip},
          {"log_path", c.log_path},
          {"auto_remove", i.rm},
          {"mounts", mounts},
          {"ports", PortsJsonOf(i.ports)},
          {"network", i.host_network ? "host" : "bridge"},
          {"privileged", i.privileged},
          {"pid", i.host_pid ? "host" : "container"},
          {"labels", c.labels}};
}

std::string HumanBytes(uint64_t b) {
  if (b < 1000) return fmt::format("{}B", b);
  if (b < 1000 * 1000) return fmt::format("{:.1f}kB", static_cast<double>(b) / 1e3);
  if (b < 1000ull * 1000 * 1000) return fmt::format("{:.1f}MB", static_cast<double>(b) / 1e6);
  return fmt::format("{:.2f}GB", static_cast<double>(b) / 1e9);
}

// --- logs ---------------------------------------------------------------------------------

// Opens a container's log at `offset`: the file itself where it is local, else a stream from
// fun-guestd (agent kind kLog) through the instance's agent channel. *stream says which.
StatusOr<UniqueFd> OpenLog(const Target& t, const std::string& path, uint64_t offset, bool follow,
                           bool* stream) {
  if (path.empty()) return FailedPreconditionError("the container has no log file");
  if (t.local_files) {
    *stream = false;
    int fd = -1;
    // A just-started container's file may not exist for a moment.
    for (int i = 0; i < 50; ++i) {
      fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd >= 0 || errno != ENOENT || !follow) break;
      std::this_thread::sleep_for(milliseconds(100));
    }
    if (fd < 0) return ErrnoError(errno, "opening the container log " + path);
    UniqueFd f(fd);
    if (offset > 0 && ::lseek(fd, static_cast<off_t>(offset), SEEK_SET) < 0) {
      return ErrnoError(errno, "seeking in " + path);
    }
    return f;
  }
  *stream = true;
  FUN_ASSIGN_OR_RETURN(Paths paths, ResolvePaths(t.env_paths));
  FUN_ASSIGN_OR_RETURN(agent::AgentEndpoint ep,
                       vm::InstanceAgentEndpoint(paths.InstanceDir(t.instance), t.instance));
  StatusOr<UniqueFd> fd = UnavailableError("not tried");
  // A just-started container's file may not exist for a moment (the guest says Unavailable).
  for (int i = 0; i < 50; ++i) {
    fd = agent::DialAgent(
        ep, {.kind = agent::Kind::kLog, .arg = agent::LogArg(offset, follow), .target = path},
        std::chrono::seconds(10));
    if (fd.ok() || fd.status().code() != Code::kUnavailable || !follow) break;
    std::this_thread::sleep_for(milliseconds(100));
  }
  if (!fd.ok()) return fd.status().WithContext("reading the container log in the VM");
  // The dial set timeouts for the handshake; a followed log may be quiet for long.
  vm::ClearSocketTimeouts(fd->get());
  return fd;
}

// Copies a container's log to out/err (stdout and stderr entries apart). With follow, keeps
// reading until `done()` says the writer is finished and nothing more arrives. With tail >= 0,
// only the last `tail` lines of what is there now, then (with follow) what comes after.
Status CopyLog(const Target& t, const std::string& path, bool follow, int tail,
               const std::function<bool()>& done, std::ostream& out, std::ostream& err) {
  auto emit = [&](const StatusOr<cri::LogEntry>& e) {
    if (!e.ok()) return;  // a corrupt line: skipped (the file is containerd's, not ours)
    std::ostream& o = e->stream == cri::LogStream::kStderr ? err : out;
    o << e->message;
    if (!e->partial) o << '\n';
    o.flush();
  };
  char buf[64 * 1024];
  uint64_t offset = 0;
  bool stream = false;
  if (tail >= 0) {
    // Everything there is now, of which the last `tail` complete lines are printed; a followed
    // log then continues after the last complete line.
    FUN_ASSIGN_OR_RETURN(UniqueFd fd, OpenLog(t, path, 0, /*follow=*/false, &stream));
    cri::LogTail keep(static_cast<size_t>(tail));
    std::string pending;
    for (;;) {
      ssize_t n = ::read(fd.get(), buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoError(errno, "reading " + path);
      if (n == 0) break;
      pending.append(buf, static_cast<size_t>(n));
      size_t start = 0;
      for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
        keep.Add(std::string_view(pending).substr(start, nl - start));
      }
      offset += start;
      pending.erase(0, start);
    }
    for (const std::string& l : keep.lines()) emit(cri::ParseLogLine(l));
    if (!follow) return OkStatus();
  }
  FUN_ASSIGN_OR_RETURN(UniqueFd fd, OpenLog(t, path, offset, follow, &stream));
  cri::LogSplitter split;
  bool half_closed = false;
  // How long to wait for more before asking whether the container is done: short for the first
  // kEager of quiet after output (a short-lived container's exit is seen within a few ms; each
  // question is one cheap CRI call), then backing off while it stays quiet.
  constexpr milliseconds kMinQuiet{5}, kMaxQuiet{200}, kEager{250};
  milliseconds quiet = kMinQuiet, quiet_for{0};
  auto back_off = [&] {
    quiet_for += quiet;
    if (quiet_for >= kEager) quiet = std::min(quiet * 2, kMaxQuiet);
  };
  for (;;) {
    if (stream) {
      // fun-guestd sends as the file grows and ends the stream after we half-close.
      pollfd p{.fd = fd.get(), .events = POLLIN, .revents = 0};
      int r = ::poll(&p, 1, static_cast<int>(quiet.count()));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return ErrnoError(errno, "waiting for the log stream");
      if (r == 0) {
        if (follow && !half_closed && done()) {
          ::shutdown(fd.get(), SHUT_WR);
          half_closed = true;
        }
        back_off();
        continue;
      }
    }
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, "reading " + path);
    if (n > 0) {
      split.Feed(std::string_view(buf, static_cast<size_t>(n)), emit);
      quiet = kMinQuiet;
      quiet_for = milliseconds(0);
      continue;
    }
    if (stream || !follow) break;
    if (done()) {
      // The writer has finished: one last read catches what it wrote before finishing.
      ssize_t last;
      while ((last = ::read(fd.get(), buf, sizeof(buf))) > 0) {
        split.Feed(std::string_view(buf, static_cast<size_t>(last)), emit);
      }
      break;
    }
    std::this_thread::sleep_for(quiet);
    back_off();
  }
  split.Finish(emit);
  return OkStatus();
}

// --- commands -----------------------------------------------------------------------------

// Connects to containerd's stream server: directly when containerd runs here, else through the
// instance's agent (the server listens on the VM's loopback).
StatusOr<UniqueFd> DialStreamServer(const Target& t, const cri::stream::StreamUrl& u) {
  if (t.instance.empty()) {
    StatusOr<UniqueFd> fd =
        Connect(SocketAddress{.kind = SocketAddress::Kind::kTcp, .host = u.host, .port = u.port});
    if (!fd.ok()) {
      return fd.status().WithContext(
          fmt::format("connecting to containerd's stream server {}:{}", u.host, u.port));
    }
    return fd;
  }
  FUN_ASSIGN_OR_RETURN(Paths paths, ResolvePaths(t.env_paths));
  const std::string target = u.host.find(':') != std::string::npos
                                 ? fmt::format("[{}]:{}", u.host, u.port)
                                 : fmt::format("{}:{}", u.host, u.port);
  StatusOr<UniqueFd> fd =
      vm::DialInstanceAgent(paths.InstanceDir(t.instance), t.instance,
                            {.kind = agent::Kind::kTcp, .target = target}, seconds(10));
  if (!fd.ok()) {
    return fd.status().WithContext(
        fmt::format("reaching containerd's stream server {} in the VM", target));
  }
  return fd;
}

Status WriteTo(std::ostream& o, std::string_view bytes) {
  o.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  o.flush();
  if (!o) return UnavailableError("writing the command's output failed");
  return OkStatus();
}

// -it needs a terminal to read from (Docker's rule).
Status CheckTerminalInput(const Context& c, bool tty, bool interactive) {
  if (tty && interactive && !(c.env.stdin_fd >= 0 && ::isatty(c.env.stdin_fd) == 1)) {
    return FailedPreconditionError(
        "the input device is not a TTY: drop -t to pass stdin, or run fun from a terminal");
  }
  return OkStatus();
}

// Connects to a streaming URL (Exec's or Attach's) and runs the session: stdin with
// interactive, our terminal raw with -it, output to out/err. The session's exit code.
StatusOr<int> RunStreamSession(const Context& c, const Target& target, const std::string& url,
                               bool tty, bool interactive) {
  const int in = c.env.stdin_fd;
  const bool in_is_tty = in >= 0 && ::isatty(in) == 1;
  FUN_ASSIGN_OR_RETURN(cri::stream::StreamUrl u, cri::stream::ParseStreamUrl(url));
  FUN_ASSIGN_OR_RETURN(UniqueFd conn, DialStreamServer(target, u));
  // The terminal whose size the container's gets: stdin's, else stdout's.
  const int size_fd = in_is_tty ? in : (c.env.stdout_is_terminal ? 1 : -1);
  std::unique_ptr<TerminalSession> term;
  if (tty && size_fd >= 0) {
    FUN_ASSIGN_OR_RETURN(term, TerminalSession::Start(size_fd, /*raw=*/interactive && in_is_tty));
  }
  cri::ExecStreamOptions o;
  o.tty = tty;
  o.stdin_fd = interactive ? in : -1;
  o.on_stdout = [&](std::string_view b) { return WriteTo(c.out, b); };
  o.on_stderr = [&](std::string_view b) { return WriteTo(c.err, b); };
  if (term) {
    o.terminal_size = [&] { return term->Size(); };
    o.resize_fd = term->resize_fd();
  }
  StatusOr<int> code = cri::RunExecStream(std::move(conn), u, o);
  term.reset();  // the terminal is itself again before anything more is printed
  return code;
}

// Each -p host address can be bound here now (and is not given twice). A port already in use
// is named with the container of ours that publishes it, when there is one.
Status CheckPublishable(const Context& c, const std::vector<cri::PortMapping>& ports) {
  std::vector<net::HostPort> seen;
  for (const cri::PortMapping& p : ports) {
    net::HostPort hp{.protocol = p.protocol == cri::PortMapping::Protocol::kUdp ? Protocol::kUdp
                                                                                : Protocol::kTcp,
                     .ip = p.host_ip.empty() ? "127.0.0.1" : p.host_ip,
                     .port = static_cast<uint16_t>(p.host_port)};
    for (const net::HostPort& o : seen) {
      if (o.protocol == hp.protocol && o.port == hp.port && o.ip == hp.ip) {
        return InvalidArgumentError(
            fmt::format("-p: {} is published twice", net::FormatHostPort(hp)));
      }
    }
    seen.push_back(hp);
    StatusOr<UniqueFd> bound = net::BindHostPort(hp);
    if (bound.ok()) continue;
    if (bound.status().code() != Code::kAlreadyExists) return bound.status();
    // Ours? Only asked where containerd is up already (this check must not start a VM).
    StatusOr<Target> t = ResolveTarget(c);
    bool up = t.ok() && t->instance.empty();
    if (t.ok() && !t->instance.empty()) {
      if (auto paths = ResolvePaths(c.env.paths); paths.ok()) {
        up = vm::GetInstanceStatus(*paths, t->instance).phase == "running";
      }
    }
    if (up) {
      if (auto cri = cri::CriClient::Connect(t->socket); cri.ok()) {
        cri::Engine engine(cri->get(), {.log_root = t->log_root});
        if (auto published = engine.Published(); published.ok()) {
          for (const cri::PublishedPort& pp : *published) {
            if (pp.port.host_port == p.host_port && pp.port.protocol == p.protocol &&
                pp.port.host_ip == hp.ip) {
              return AlreadyExistsError(fmt::format(
                  "{} is already published by container {}: stop it (fun stop {}) or publish "
                  "another host port",
                  net::FormatHostPort(hp), pp.container, pp.container));
            }
          }
        }
      }
    }
    return bound.status();
  }
  return OkStatus();
}

// In a VM instance, fun-hostd publishes ports: ask it to catch up now (a container started,
// stopped or went away) rather than on its next round; with `container`, say which of that
// container's ports could not be published. Natively there is nothing to ask.
void SyncPublishedPorts(const Context& c, const Target& t, const std::string& container = "") {
  if (t.instance.empty()) return;
  auto paths = ResolvePaths(t.env_paths);
  if (!paths.ok()) return;
  auto table = vm::RequestPublish(paths->InstanceDir(t.instance), seconds(15));
  if (!table.ok()) {
    if (!container.empty()) {
      c.err << "fun: warning: ports not published yet: " << table.status().message() << "\n";
    }
    return;
  }
  if (container.empty()) return;
  for (const vm::PublishState& s : *table) {
    if (s.want.owner == container && !s.listening) {
      c.err << "fun: warning: " << net::FormatHostPort(s.want.host)
            << " is not published: " << s.error << "\n";
    }
  }
}

// -v: the mounts for where the containers run. Natively (and for a native-backend instance) the
// host path itself; a VM instance's through its shares: config.json's, or this machine's
// defaults for an instance not created yet. Starts and creates nothing.
StatusOr<std::vector<cri::BindMount>> PlanMounts(const Context& c,
                                                 const std::vector<vm::VolumeSpec>& volumes) {
  if (volumes.empty()) return std::vector<cri::BindMount>{};
  FUN_ASSIGN_OR_RETURN(Target t, ResolveTarget(c));
  if (t.instance.empty()) return vm::PlanBindMounts(volumes, nullptr);
  FUN_ASSIGN_OR_RETURN(Paths paths, ResolvePaths(c.env.paths));
  vm::VmShares shares;
  shares.instance = t.instance;
  shares.config_path = paths.InstanceFile(t.instance, InstanceFileKind::kConfig);
  const InstanceConfig defaults = vm::DefaultsForThisMachine(paths, t.instance);
  StatusOr<InstanceConfig> config = LoadInstanceConfigFile(shares.config_path, defaults);
  if (!config.ok() && config.status().code() != Code::kNotFound) return config.status();
  const InstanceConfig& in_force = config.ok() ? *config : defaults;
  if (in_force.backend == Backend::kNative) return vm::PlanBindMounts(volumes, nullptr);
  shares.shares = vm::ResolveShareHostPaths(in_force.shares);
  return vm::PlanBindMounts(volumes, &shares);
}

int CmdRun(const Context& c, const std::vector<std::string>& args) {
  bool detach = false, rm = false, tty = false, interactive = false, privileged = false;
  std::string name, workdir, entrypoint, user;
  std::vector<std::string> env;
  FlagSet flags("fun run");
  flags.Bool("detach", &detach, "run in the background and print the container id", 'd');
  flags.Bool("rm", &rm, "remove the container when it exits");
  flags.String("name", &name, "the container's name");
  flags.Repeated("env", &env, "set an environment variable (K=V, or K to take it from here)", 'e');
  flags.String("workdir", &workdir, "the working directory in the container", 'w');
  flags.String("entrypoint", &entrypoint, "replace the image's entrypoint");
  flags.String("user", &user, "UID, UID:GID or a user name of the image", 'u');
  flags.Bool("tty", &tty, "give the container a terminal", 't');
  flags.Bool("interactive", &interactive, "pass stdin to the container", 'i');
  std::vector<std::string> publish;
  flags.Repeated("publish", &publish,
                 "publish a container port on the host: [HOSTIP:]HOSTPORT:PORT[/udp] (host "
                 "address 127.0.0.1 unless named)",
                 'p');
  std::vector<std::string> volume;
  flags.Repeated("volume", &volume,
                 "bind-mount a host folder or file: HOSTPATH:CTRPATH[:ro] (an absolute path that "
                 "exists; in a VM, under a shared folder)",
                 'v');
  std::string network = "bridge";
  flags.String("network", &network,
               "bridge (the default: an address on the CNI bridge, NATed out) or host (the VM's "
               "network, or this host's with --host native)");
  std::string pid_mode;
  flags.String("pid", &pid_mode,
               "host: see and signal every process of the VM (or of this host with --host "
               "native), as Docker's --pid host");
  flags.Bool("privileged", &privileged,
             "every capability and device, no seccomp or AppArmor: the container may mount file "
             "systems (in a VM: root of the VM, not of this host)");
  if (!args.empty() && args[0] == "--help") {
    c.out << "usage: fun run [OPTIONS] IMAGE [CMD...]\n\n" << flags.Usage();
    return 0;
  }
  auto rest = flags.Parse(args, /*stop_at_first_positional=*/true);
  if (!rest.ok()) return Usage(c.err, rest.status());
  if (rest->empty())
    return Usage(c.err,
                 InvalidArgumentError("run needs an IMAGE: fun run [OPTIONS] IMAGE [CMD...]"));
  if (!detach) {
    if (Status s = CheckTerminalInput(c, tty, interactive); !s.ok()) return Fail(c.err, s);
  }
  if (detach && rm) {
    // Docker allows it; so do we: the container is removed by whoever sees it exit (fun ps).
  }
  cri::RunSpec spec;
  spec.image = (*rest)[0];
  spec.cmd.assign(rest->begin() + 1, rest->end());
  spec.name = name;
  spec.workdir = workdir;
  spec.user = user;
  spec.rm = rm;
  spec.privileged = privileged;
  if (pid_mode == "host") {
    spec.host_pid = true;
  } else if (!pid_mode.empty()) {
    return Usage(c.err, InvalidArgumentError(fmt::format(
                            "--pid \"{:.40}\": use host (or leave it out for a PID namespace of "
                            "the container's own)",
                            pid_mode)));
  }
  if (network == "host") {
    spec.host_network = true;
  } else if (network != "bridge") {
    return Usage(c.err, InvalidArgumentError(
                            fmt::format("--network \"{:.40}\": use bridge or host", network)));
  }
  for (const std::string& p : publish) {
    StatusOr<PortForward> f = ParsePortSpec(p);
    if (!f.ok()) return Usage(c.err, f.status().WithContext("-p"));
    spec.ports.push_back({.protocol = f->protocol == Protocol::kUdp
                                          ? cri::PortMapping::Protocol::kUdp
                                          : cri::PortMapping::Protocol::kTcp,
                          .container_port = f->guest_port,
                          .host_port = f->host_port,
                          .host_ip = f->host_ip});
  }
  spec.tty = tty;
  spec.interactive = interactive;
  if (!entrypoint.empty()) spec.entrypoint = std::vector<std::string>{entrypoint};
  for (const std::string& e : env) {
    const size_t eq = e.find('=');
    if (eq == 0)
      return Usage(c.err, InvalidArgumentError(
                              fmt::format("-e \"{}\": the name is empty (use -e NAME=VALUE)", e)));
    if (eq == std::string::npos) {
      const char* v = std::getenv(e.c_str());
      if (v != nullptr) spec.env.emplace_back(e, v);  // Docker: unset variables are left out
    } else {
      spec.env.emplace_back(e.substr(0, eq), e.substr(eq + 1));
    }
  }
  // Check what needs no containerd before starting anything.
  if (auto ref = cri::ParseImageRef(spec.image); !ref.ok()) return Usage(c.err, ref.status());
  if (!spec.name.empty()) {
    if (Status s = cri::ValidateContainerName(spec.name); !s.ok()) return Usage(c.err, s);
  }
  if (auto u = cri::ParseUserSpec(spec.user); !u.ok()) return Usage(c.err, u.status());
  auto volumes = vm::ParseVolumeSpecs(volume);
  if (!volumes.ok()) return Usage(c.err, volumes.status());
  // A host path that does not exist or that the VM cannot see fails the run before anything
  // is started or created.
  auto mounts = PlanMounts(c, *volumes);
  if (!mounts.ok()) return Fail(c.err, mounts.status());
  spec.mounts = std::move(*mounts);
  // A host port that cannot be published fails the run before a container exists.
  if (Status s = CheckPublishable(c, spec.ports); !s.ok()) return Fail(c.err, s);

  auto session = Open(c);
  if (!session.ok()) return Fail(c.err, session.status());
  // The pull on its own first (as Docker does), with a progress bar from containerd's content
  // service: inside Run, RunPodSandbox may pull the sandbox image, which the bar must not count.
  std::optional<cri::PullProgress> pulling;
  auto image = session->engine->EnsureImage(spec.image, [&](std::string_view ref) {
    pulling.emplace(session->target.socket, std::string(ref), c.err, c.env.stderr_is_terminal);
  });
  if (pulling) pulling->Finish(image.ok() ? fmt::format("pulled {}", spec.image) : "");
  if (!image.ok()) return Fail(c.err, image.status());
  auto r = session->engine->Run(spec);
  if (!r.ok()) return Fail(c.err, r.status());
  if (!spec.ports.empty()) SyncPublishedPorts(c, session->target, r->name);
  if (detach) {
    c.out << r->container_id << std::endl;
    return 0;
  }
  cri::Engine& engine = *session->engine;
  auto finish = [&](int code) {
    if (rm) {
      // An exited container is removed by its ids; one still running (a failed attach) is
      // stopped first.
      auto st = session->cri->ContainerStatus(r->container_id);
      Status s = st.ok() && st->state == cri::ContainerState::kExited
                     ? engine.RemoveIds(r->container_id, r->pod_id)
                     : engine.Remove(r->container_id, /*force=*/true);
      if (!s.ok()) {
        c.err << "fun: " << s.message() << "\n";
      }
    }
    if (!spec.ports.empty()) SyncPublishedPorts(c, session->target);
    return code;
  };
  if (tty || interactive) {
    // Attach to the container's process (CRI attaches only once it runs: what it printed
    // before that is in its log, not here; a shell's prompt comes again on Enter).
    auto url = session->cri->Attach(
        r->container_id, {.tty = tty, .stdin = interactive, .stdout = true, .stderr = !tty});
    if (url.ok()) {
      StatusOr<int> attached = RunStreamSession(c, session->target, *url, tty, interactive);
      if (!attached.ok()) c.err << "fun: " << attached.status().message() << "\n";
      auto code = engine.Wait(r->container_id);
      if (!code.ok()) return Fail(c.err, code.status());
      return finish(*code);
    }
    auto st = session->cri->ContainerStatus(r->container_id);
    if (!st.ok() || st->state == cri::ContainerState::kRunning) {
      Fail(c.err, url.status().WithContext("attaching to the container"));
      return finish(1);
    }
    // It ended before it could be attached: show its output from the log, as without -i/-t.
  }
  // Foreground: print its output until it exits, then exit with its code.
  auto status = session->cri->ContainerStatus(r->container_id);
  if (!status.ok()) return Fail(c.err, status.status());
  bool exited = false;
  // A status call that runs out its deadline (containerd slow in a VM short of memory) is no
  // exit: keep following the log, or what the container prints meanwhile is never shown. Only
  // after as long a silence as Wait accepts, stop following and let Wait say why.
  cri::Silence silence = engine.NewSilence();
  auto done = [&] {
    auto st = session->cri->ContainerStatus(r->container_id);
    if (!st.ok() && st.status().code() == Code::kDeadlineExceeded) return !silence.Bear();
    silence.Reset();
    exited = !st.ok() || st->state == cri::ContainerState::kExited;
    return exited;
  };
  Status copied =
      CopyLog(session->target, status->log_path, /*follow=*/true, /*tail=*/-1, done, c.out, c.err);
  if (!copied.ok()) c.err << "fun: " << copied.message() << "\n";
  auto code = engine.Wait(r->container_id);
  if (!code.ok()) return Fail(c.err, code.status());
  return finish(*code);
}

int CmdPs(const Context& c, const std::vector<std::string>& args) {
  bool all = false, quiet = false, json = false;
  FlagSet flags("fun ps");
  flags.Bool("all", &all, "also containers that are not running", 'a');
  flags.Bool("quiet", &quiet, "only ids", 'q');
  flags.Bool("json", &json, "JSON, one array");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(c.err, rest.status());
  if (!rest->empty()) return Usage(c.err, InvalidArgumentError("ps takes no arguments"));
  auto session = Open(c);
  if (!session.ok()) return Fail(c.err, session.status());
  auto list = session->engine->List(all);
  if (!list.ok()) return Fail(c.err, list.status());
  if (json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& i : *list) j.push_back(ToJson(i));
    c.out << j.dump(2) << "\n";
    return 0;
  }
  if (quiet) {
    for (const auto& i : *list) c.out << i.container.id.substr(0, 12) << "\n";
    return 0;
  }
  c.out << fmt::format("{:<14}{:<28}{:<24}{:<17}{:<28}{:<26}{}\n", "CONTAINER ID", "IMAGE",
                       "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES");
  for (const auto& i : *list) {
    c.out << fmt::format("{:<14}{:<28}{:<24}{:<17}{:<28}{:<26}{}\n", i.container.id.substr(0, 12),
                         Cut(i.container.image, 26), Cut("\"" + Quote(i.command) + "\"", 22),
                         HumanDuration(NowNs() - i.container.created_at_ns) + " ago",
                         StatusText(i.container), PortsText(i.ports), i.name);
  }
  return 0;
}

int CmdStop(const Context& c, const std::vector<std::string>& args) {
  int grace = 10;
  FlagSet flags("fun stop");
  flags.Int("time", &grace, "seconds to wait for the container to stop before SIGKILL", 't');
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(c.err, rest.status());
  if (rest->empty()) return Usage(c.err, InvalidArgumentError("stop needs a CONTAINER"));
  if (grace < 0) return Usage(c.err, InvalidArgumentError("-t must be 0 or more seconds"));
  auto session = Open(c);
  if (!session.ok()) return Fail(c.err, session.status());
  int code = 0;
  for (const std::string& name : *rest) {
    Status s = session->engine->Stop(name, seconds(grace));
    if (!s.ok()) {
      code = Fail(c.err, s);
    } else {
      c.out << name << "\n";
    }
  }
  SyncPublishedPorts(c, session->target);
  return code;
}

int CmdStart(const Context& c, const std::vector<std::string>& args) {
  FlagSet flags("fun start");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(c.err, rest.status());
  if (rest->empty()) return Usage(c.err, InvalidArgumentError("start needs a CONTAINER"));
  auto session = Open(c);
  if (!session.ok()) return Fail(c.err, session.status());
  int code = 0;
  for (const std::string& name : *rest) {
    auto info = session->engine->Find(name);
    if (info.ok() && info->container.state != cri::ContainerState::kRunning &&
        info->container.annotations.contains(std::string(cri::kAnnotationSpec))) {
      // containerd would make a missing host folder again, empty (in a VM: through the share).
      if (Status s = vm::CheckHostPaths(info->mounts); !s.ok()) {
        code = Fail(c.err, s.WithContext(fmt::format("starting {}", info->name)));
        continue;
      }
    }
    if (info.ok()) {
      if (Status s = CheckPublishable(c, info->container.state == cri::ContainerState::kRunning
                                             ? std::vector<cri::PortMapping>{}
                                             : info->ports);
          !s.ok()) {
        code = Fail(c.err, s.WithContext(fmt::format("starting {}", info->name)));
        continue;
      }
    }
    StatusOr<cri::RunResult> r = session->engine->Start(name);
    if (!r.ok()) {
      code = Fail(c.err, r.status());
    } else {
      if (info.ok() && !info->ports.empty()) SyncPublishedPorts(c, session->target, r->name);
      c.out << name << "\n";
    }
  }
  return code;
}

int CmdRm(const Context& c, const std::vector<std::string>& args) {
  bool force = false;
  FlagSet flags("fun rm");
  flags.Bool("force", &force, "stop a running container first (SIGKILL)", 'f');
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(c.err, rest.status());
  if (rest->empty()) return Usage(c.err, InvalidArgumentError("rm needs a CONTAINER"));
  auto session = Open(c);
  if (!session.ok()) return Fail(c.err, session.status());
  int code = 0;
  for (const std::string& name : *rest) {
    Status s = session->engine->Remove(name, force);
    if (!s.ok()) {
      code = Fail(c.err, s);
    } else {
      c.out << name << "\n";
    }
  }
  SyncPublishedPorts(c, session->target);
  return code;
}

int CmdLogs(const Context& c, const std::vector<std::string>& args) {
  bool follow = false;
  std::string tail_s = "all";
  FlagSet flags("fun logs");
  flags.Bool("follow", &follow, "keep printing new output until the container exits", 'f');
  flags.String("tail", &tail_s, "only the last N lines (default all)", 'n');
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(c.err, rest.status());
  if (rest->size() != 1) return Usage(c.err, InvalidArgumentError("logs needs one CONTAINER"));
  int tail = -1;
  if (tail_s != "all") {
    auto n = ParseInt(tail_s, "--tail");
    if (!n.ok() || *n < 0) {
      return Usage(c.err, InvalidArgumentError(
                              fmt::format("--tail \"{}\": use a number of lines or all", tail_s)));
    }
    tail = *n;
  }
  auto session = Open(c);
  if (!session.ok()) return Fail(c.err, session.status());
  auto info = session->engine->Find((*rest)[0]);
  if (!info.ok()) return Fail(c.err, info.status());
  const std::string id = info->container.id;
  auto done = [&] {
    auto st = session->cri->ContainerStatus(id);
    return !st.ok() || st->state != cri::ContainerState::kRunning;
  };
  Status s = CopyLog(session->target, info->container.log_path, follow, tail, done, c.out, c.err);
  if (!s.ok()) return Fail(c.err, s);
  return 0;
}

// exec -i / -t: through CRI's streaming URL.
int ExecInteractive(const Context& c, const std::vector<std::string>& rest, bool tty,
                    bool interactive) {
  if (Status s = CheckTerminalInput(c, tty, interactive); !s.ok()) return Fail(c.err, s);
  auto session = Open(c);
  if (!session.ok()) return Fail(c.err, session.status());
  std::vector<std::string> cmd(rest.begin() + 1, rest.end());
  auto url = session->engine->ExecStreamUrl(
      rest[0], cmd, {.tty = tty, .stdin = interactive, .stdout = true, .stderr = !tty});
  if (!url.ok()) return Fail(c.err, url.status());
  StatusOr<int> code = RunStreamSession(c, session->target, *url, tty, interactive);
  if (!code.ok()) {
    // Docker's codes: 126 when the command could not be run.
    Fail(c.err, code.status().WithContext(fmt::format("exec in {}", rest[0])));
    return code.status().code() == Code::kFailedPrecondition ? 126 : 1;
  }
  return *code;
}

int CmdExec(const Context& c, const std::vector<std::string>& args) {
  bool tty = false, interactive = false;
  int timeout = 0;
  FlagSet flags("fun exec");
  flags.Bool("tty", &tty, "give the command a terminal", 't');
  flags.Bool("interactive", &interactive, "pass stdin to the command", 'i');
  flags.Int("timeout", &timeout, "kill the command after this many seconds (0: never)");
  auto rest = flags.Parse(args, /*stop_at_first_positional=*/true);
  if (!rest.ok()) return Usage(c.err, rest.status());
  if (rest->size() < 2)
    return Usage(c.err, InvalidArgumentError("exec needs a CONTAINER and a CMD"));
  if (tty || interactive) {
    if (timeout != 0) {
      return Usage(c.err, InvalidArgumentError("--timeout works only without -i and -t"));
    }
    return ExecInteractive(c, *rest, tty, interactive);
  }
  auto session = Open(c);
  if (!session.ok()) return Fail(c.err, session.status());
  std::vector<std::string> cmd(rest->begin() + 1, rest->end());
  auto r = session->engine->Exec((*rest)[0], cmd, seconds(timeout));
  if (!r.ok()) return Fail(c.err, r.status());
  c.out << r->stdout_bytes;
  c.out.flush();
  c.err << r->stderr_bytes;
  return r->exit_code;
}

int CmdInspect(const Context& c, const std::vector<std::string>& args) {
  FlagSet flags("fun inspect");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(c.err, rest.status());
  if (rest->empty()) return Usage(c.err, InvalidArgumentError("inspect needs a CONTAINER"));
  auto session = Open(c);
  if (!session.ok()) return Fail(c.err, session.status());
  nlohmann::json j = nlohmann::json::array();
  int code = 0;
  for (const std::string& name : *rest) {
    auto info = session->engine->Find(name);
    if (!info.ok()) {
      code = Fail(c.err, info.status());
      continue;
    }
    j.push_back(ToJson(*info));
  }
  c.out << j.dump(2) << "\n";
  return code;
}

int CmdPull(const Context& c, const std::vector<std::string>& args) {
  FlagSet flags("fun pull");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(c.err, rest.status());
  if (rest->size() != 1) return Usage(c.err, InvalidArgumentError("pull needs one IMAGE"));
  if (auto parsed = cri::ParseImageRef((*rest)[0]); !parsed.ok()) {
    return Usage(c.err, parsed.status());
  }
  auto session = Open(c);
  if (!session.ok()) return Fail(c.err, session.status());
  const std::string& ref = (*rest)[0];
  // Bytes and layers from containerd's content service, polled on a thread of its own while
  // the pull call blocks (a spinner where there is no content service).
  cri::PullProgress progress(session->target.socket, ref, c.err, c.env.stderr_is_terminal);
  auto id = session->cri->PullImage(ref);
  const cri::PullSnapshot pulled = progress.Finish("");
  if (!id.ok()) return Fail(c.err, id.status().WithContext(fmt::format("pulling {}", ref)));
  c.out << fmt::format("pulled {} ({}, {}{:.1f} s)\n", ref, id->substr(0, 19),
                       pulled.layers_seen == 0 ? "" : pulled.Describe() + ", ",
                       progress.elapsed_seconds());
  return 0;
}

int CmdImages(const Context& c, const std::vector<std::string>& args) {
  bool quiet = false, json = false;
  FlagSet flags("fun images");
  flags.Bool("quiet", &quiet, "only ids", 'q');
  flags.Bool("json", &json, "JSON, one array");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(c.err, rest.status());
  if (!rest->empty()) return Usage(c.err, InvalidArgumentError("images takes no arguments"));
  auto session = Open(c);
  if (!session.ok()) return Fail(c.err, session.status());
  auto images = session->cri->ListImages();
  if (!images.ok()) return Fail(c.err, images.status());
  if (json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& i : *images) {
      j.push_back({{"id", i.id},
                   {"repo_tags", i.repo_tags},
                   {"repo_digests", i.repo_digests},
                   {"size", i.size_bytes},
                   {"pinned", i.pinned}});
    }
    c.out << j.dump(2) << "\n";
    return 0;
  }
  if (!quiet)
    c.out << fmt::format("{:<48}{:<16}{:<15}{}\n", "REPOSITORY", "TAG", "IMAGE ID", "SIZE");
  for (const auto& i : *images) {
    const std::string short_id =
        i.id.substr(i.id.find(':') == std::string::npos ? 0 : i.id.find(':') + 1, 12);
    if (quiet) {
      c.out << short_id << "\n";
      continue;
    }
    std::vector<std::string> tags = i.repo_tags;
    if (tags.empty()) tags.push_back("<none>:<none>");
    for (const std::string& t : tags) {
      const size_t colon = t.rfind(':');
      const bool has_tag = colon != std::string::npos && t.find('/', colon) == std::string::npos;
      c.out << fmt::format("{:<48}{:<16}{:<15}{}\n", has_tag ? t.substr(0, colon) : t,
                           has_tag ? t.substr(colon + 1) : "<none>", short_id,
                           HumanBytes(i.size_bytes));
    }
  }
  return 0;
}

int CmdRmi(const Context& c, const std::vector<std::string>& args) {
  FlagSet flags("fun rmi");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(c.err, rest.status());
  if (rest->empty()) return Usage(c.err, InvalidArgumentError("rmi needs an IMAGE"));
  auto session = Open(c);
  if (!session.ok()) return Fail(c.err, session.status());
  int code = 0;
  for (const std::string& ref : *rest) {
    auto have = session->cri->ImageStatus(ref);
    if (!have.ok()) {
      code = Fail(c.err, have.status());
      continue;
    }
    if (!have->has_value()) {
      code = Fail(c.err, NotFoundError(fmt::format("no image {}: 'fun images' lists them", ref)));
      continue;
    }
    Status s = session->cri->RemoveImage(ref);
    if (!s.ok()) {
      code = Fail(c.err, s);
    } else {
      c.out << "removed " << ref << "\n";
    }
  }
  return code;
}

int CmdVersion(const Context& c, const std::vector<std::string>& args, bool info) {
  bool json = false;
  FlagSet flags(info ? "fun info" : "fun version");
  flags.Bool("json", &json, "JSON");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(c.err, rest.status());
  if (!rest->empty()) return Usage(c.err, InvalidArgumentError("no arguments expected"));
  auto session = Open(c);
  if (!session.ok()) return Fail(c.err, session.status());
  auto v = session->cri->Version();
  if (!v.ok()) return Fail(c.err, v.status());
  StatusOr<cri::RuntimeStatus> st =
      info ? session->cri->Status() : StatusOr<cri::RuntimeStatus>(cri::RuntimeStatus{});
  if (!st.ok()) return Fail(c.err, st.status());
  if (json) {
    nlohmann::json j = {{"client", kVersion},
                        {"target", session->target.description},
                        {"socket", session->target.socket},
                        {"runtime_name", v->runtime_name},
                        {"runtime_version", v->runtime_version},
                        {"runtime_api_version", v->runtime_api_version}};
    if (info) {
      j["runtime_ready"] = st->runtime_ready;
      j["network_ready"] = st->network_ready;
      j["conditions"] = nlohmann::json::array();
      for (const auto& cnd : st->conditions) {
        j["conditions"].push_back({{"type", cnd.type},
                                   {"status", cnd.status},
                                   {"reason", cnd.reason},
                                   {"message", cnd.message}});
      }
    }
    c.out << j.dump(2) << "\n";
    return 0;
  }
  c.out << fmt::format("fun {}\n{} ({}): {} {} (CRI {})\n", kVersion, session->target.description,
                       session->target.socket, v->runtime_name, v->runtime_version,
                       v->runtime_api_version);
  if (info) c.out << st->Describe() << "\n";
  return 0;
}

}  // namespace

Environment EnvironmentFromProcess() {
  Environment e;
  e.paths = PathsInputFromEnvironment();
  if (const char* h = std::getenv("FUN_HOST"); h != nullptr) e.fun_host = h;
  e.stdout_is_terminal = IsTerminal(1);
  e.stderr_is_terminal = IsTerminal(2);
  return e;
}

int Run(const std::vector<std::string>& args, const Environment& env, std::ostream& out,
        std::ostream& err) {
  Context c{.env = env, .out = out, .err = err, .host = {}, .log_root = {}};
  FlagSet global("fun");
  global.String("host", &c.host, "NAME (a VM instance), native, or unix:PATH", 'H');
  global.String("log-root", &c.log_root, "where containerd writes container logs");
  bool debug = false;
  global.Bool("debug", &debug, "log each CRI call and its duration to stderr");
  if (!args.empty() && (args[0] == "-h" || args[0] == "--help")) {
    out << kUsage;
    return 0;
  }
  auto rest = global.Parse(args, /*stop_at_first_positional=*/true);
  if (!rest.ok()) return Usage(err, rest.status());
  if (rest->empty()) {
    err << kUsage;
    return 2;
  }
  if (debug) log::Default().SetStderrLevel(log::Level::kDebug);
  const std::string cmd = (*rest)[0];
  std::vector<std::string> a(rest->begin() + 1, rest->end());
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    out << kUsage;
    return 0;
  }
  if (cmd == "run") return CmdRun(c, a);
  // The other commands' flags are in the usage.
  if (!a.empty() && a[0] == "--help") {
    out << kUsage;
    return 0;
  }
  if (cmd == "ps") return CmdPs(c, a);
  if (cmd == "stop") return CmdStop(c, a);
  if (cmd == "rm") return CmdRm(c, a);
  if (cmd == "start") return CmdStart(c, a);
  if (cmd == "logs") return CmdLogs(c, a);
  if (cmd == "exec") return CmdExec(c, a);
  if (cmd == "inspect") return CmdInspect(c, a);
  if (cmd == "pull") return CmdPull(c, a);
  if (cmd == "images") return CmdImages(c, a);
  if (cmd == "rmi") return CmdRmi(c, a);
  if (cmd == "version" || cmd == "--version") return CmdVersion(c, a, false);
  if (cmd == "info") return CmdVersion(c, a, true);
  return Usage(err, InvalidArgumentError(fmt::format(
                        "unknown command \"{:.40}\": run 'fun --help' for the commands", cmd)));
}

}  // namespace fun::cli

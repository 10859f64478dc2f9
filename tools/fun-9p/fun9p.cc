#include "tools/fun-9p/fun9p.h"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <thread>

#include "lib/base/flags.h"
#include "lib/base/log.h"
#include "lib/base/socket.h"
#include "lib/p9/listener.h"

namespace fun::fun9p {
namespace {

constexpr const char kUsage[] =
    "usage: fun-9p serve --export NAME=DIR[:ro] [--export ...] --listen ADDRESS [--listen ...]\n"
    "                    [--fd N] [--msize BYTES] [--workers N] [--log-level LEVEL]\n"
    "                    [--log-file PATH]\n"
    "\n"
    "Serves host folders over 9P2000.L. ADDRESS is tcp:HOST:PORT, tcp:[IPV6]:PORT or\n"
    "unix:PATH (port 0 picks a free port; the bound address is printed). The client's aname\n"
    "picks an export by NAME; the DIR path works too. --fd serves an already-connected\n"
    "stream (a socketpair, a virtio-serial port).\n";

}  // namespace

StatusOr<p9::ExportSpec> ParseExport(std::string_view spec) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(
        fmt::format("--export \"{}\": {} (use NAME=DIR or NAME=DIR:ro)", spec, why));
  };
  auto eq = spec.find('=');
  if (eq == std::string_view::npos) return bad("missing NAME=");
  p9::ExportSpec e;
  e.name = std::string(spec.substr(0, eq));
  std::string_view dir = spec.substr(eq + 1);
  if (dir.size() > 3 && dir.substr(dir.size() - 3) == ":ro") {
    e.read_only = true;
    dir.remove_suffix(3);
  } else if (dir.size() > 3 && dir.substr(dir.size() - 3) == ":rw") {
    dir.remove_suffix(3);
  }
  if (e.name.empty()) return bad("empty NAME");
  for (char c : e.name) {
    if (c == '/' || c == '\0' || c == ' ') return bad("NAME may not contain '/' or spaces");
  }
  if (dir.empty() || dir.front() != '/') return bad("DIR must be an absolute path");
  e.dir = std::string(dir);
  while (e.dir.size() > 1 && e.dir.back() == '/') e.dir.pop_back();
  return e;
}

StatusOr<ServeOptions> ParseServeArgs(const std::vector<std::string>& args) {
  ServeOptions o;
  std::vector<std::string> exports, fds;
  int msize = static_cast<int>(o.server.max_msize);
  int workers = o.server.workers;
  FlagSet flags("fun-9p serve");
  flags.Repeated("export", &exports, "NAME=DIR[:ro]: a folder to serve");
  flags.Repeated("listen", &o.listen, "tcp:HOST:PORT or unix:PATH");
  flags.Repeated("fd", &fds, "an already-connected stream fd to serve");
  flags.Int("msize", &msize, "the largest message size offered (4096 .. 16777216)");
  flags.Int("workers", &workers, "worker threads (0: automatic)");
  flags.String("log-level", &o.log_level, "debug, info, warning, error");
  flags.String("log-file", &o.log_file, "also log to this file");
  FUN_ASSIGN_OR_RETURN(auto rest, flags.Parse(args));
  if (!rest.empty()) {
    return InvalidArgumentError(
        fmt::format("unexpected argument \"{}\": see 'fun-9p --help'", rest[0]));
  }
  if (exports.empty()) return InvalidArgumentError("at least one --export NAME=DIR is needed");
  if (o.listen.empty() && fds.empty()) {
    return InvalidArgumentError("nothing to serve on: give --listen ADDRESS or --fd N");
  }
  for (const auto& e : exports) {
    FUN_ASSIGN_OR_RETURN(auto spec, ParseExport(e));
    o.server.exports.push_back(std::move(spec));
  }
  for (const auto& l : o.listen) FUN_RETURN_IF_ERROR_CTX(ParseSocketAddress(l), "--listen");
  for (const auto& f : fds) {
    FUN_ASSIGN_OR_RETURN(int fd, ParseInt(f, "--fd"));
    if (fd < 0) return InvalidArgumentError("--fd: must be a file descriptor number");
    o.fds.push_back(fd);
  }
  if (msize < 4096 || msize > (16 << 20)) {
    return InvalidArgumentError(
        fmt::format("--msize: {} is out of range: use 4096 .. 16777216", msize));
  }
  if (workers < 0 || workers > 1024) {
    return InvalidArgumentError(
        fmt::format("--workers: {} is out of range: use 0 .. 1024", workers));
  }
  o.server.max_msize = static_cast<uint32_t>(msize);
  o.server.workers = workers;
  FUN_RETURN_IF_ERROR_CTX(log::ParseLevel(o.log_level), "--log-level");
  return o;
}

int Run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
        std::atomic<bool>* stop) {
  if (args.empty() || args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
    (args.empty() ? err : out) << kUsage;
    return args.empty() ? 2 : 0;
  }
  if (args[0] != "serve") {
    err << "fun-9p: unknown command \"" << args[0] << "\": run 'fun-9p --help'\n";
    return 2;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (!rest.empty() && (rest[0] == "-h" || rest[0] == "--help")) {
    out << kUsage;
    return 0;
  }
  auto opts = ParseServeArgs(rest);
  if (!opts.ok()) {
    err << "fun-9p: " << opts.status().message() << "\n";
    return 2;
  }
  log::Logger& logger = log::Default();
  logger.SetStderrFormat(log::StderrFormat::kFull);
  logger.SetStderrLevel(*log::ParseLevel(opts->log_level));
  if (!opts->log_file.empty()) {
    Status s = logger.OpenFile(opts->log_file, *log::ParseLevel(opts->log_level));
    if (!s.ok()) {
      err << "fun-9p: " << s.message() << "\n";
      return 1;
    }
  }
  auto server = p9::Server::Create(opts->server);
  if (!server.ok()) {
    err << "fun-9p: " << server.status().message() << "\n";
    return 1;
  }
  for (const auto& e : opts->server.exports) {
    FUN_LOG(Info, "exporting {} as \"{}\"{}", e.dir, e.name, e.read_only ? " (read-only)" : "");
  }
  std::vector<std::unique_ptr<p9::Listener>> listeners;
  for (const auto& l : opts->listen) {
    auto listener = p9::Listener::Create(server->get(), *ParseSocketAddress(l));
    if (!listener.ok()) {
      err << "fun-9p: " << listener.status().message() << "\n";
      return 1;
    }
    out << "listening on " << (*listener)->address() << std::endl;
    listeners.push_back(std::move(*listener));
  }
  std::atomic<int> fd_connections{static_cast<int>(opts->fds.size())};
  std::vector<std::thread> threads;
  for (int fd : opts->fds) {
    threads.emplace_back([&, fd] {
      (*server)->ServeConnection(fd, fmt::format("fd:{}", fd));
      --fd_connections;
    });
  }
  std::vector<Status> results(listeners.size());
  for (size_t i = 0; i < listeners.size(); ++i) {
    threads.emplace_back([&, i] { results[i] = listeners[i]->Run(); });
  }
  // Wait for a stop request, or for the end of the --fd connections when nothing listens.
  while (!stop->load() && !(listeners.empty() && fd_connections.load() == 0)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  FUN_LOG(Info, "shutting down");
  for (auto& l : listeners) l->Stop();
  (*server)->Shutdown();
  for (auto& t : threads) t.join();
  listeners.clear();
  int code = 0;
  for (const auto& r : results) {
    if (!r.ok()) {
      err << "fun-9p: " << r.message() << "\n";
      code = 1;
    }
  }
  return code;
}

}  // namespace fun::fun9p

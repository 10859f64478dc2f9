#include "tools/fun-forward/forward.h"

#include <fmt/format.h>
#include <poll.h>

#include <cerrno>
#include <memory>

#include "lib/base/flags.h"
#include "lib/base/log.h"
#include "lib/net/agent_client.h"

namespace fun::forward {
namespace {

constexpr const char kUsage[] =
    "usage: fun-forward --agent tcp:HOST:PORT|unix:PATH --token-file PATH -p SPEC...\n"
    "       fun-forward --direct -p SPEC...\n"
    "\n"
    "Forwards host ports to targets inside a VM through its guest agent (fun-guestd), as\n"
    "fun-hostd does for published ports, until SIGINT or SIGTERM.\n"
    "  SPEC is [HOSTIP:]HOSTPORT:TARGETIP:TARGETPORT[/udp]; IPv6 addresses go in brackets.\n"
    "\n"
    "flags:\n"
    "  --agent ADDR          where the guest agent listens (tcp:127.0.0.1:7070, unix:PATH)\n"
    "  --token-file PATH     the instance secret (32 bytes)\n"
    "  -p, --publish SPEC    a forward (repeatable)\n"
    "  --direct              no agent: dial each target from the host (debugging, perf)\n"
    "  --dial-timeout-ms N   for each agent channel (default 5000)\n"
    "  --buffer-kib N        the most bytes each TCP relay direction holds (default 1024)\n"
    "  --splice-method M     auto, pipe or readwrite (default auto)\n"
    "  --udp-idle-ms N       a UDP session without traffic ends (default 60000)\n"
    "  --log-level LEVEL     debug, info, warning, error (default warning)\n";

}  // namespace

StatusOr<Options> ParseArgs(const std::vector<std::string>& args) {
  Options o;
  std::vector<std::string> publish;
  int dial_timeout_ms = static_cast<int>(o.dial_timeout.count());
  int buffer_kib = static_cast<int>(o.forward.buffer_size / 1024);
  int udp_idle_ms = static_cast<int>(o.forward.udp_idle_timeout.count());
  std::string method = "auto";
  FlagSet flags("fun-forward");
  flags.String("agent", &o.agent, "where the guest agent listens");
  flags.String("token-file", &o.token_file, "the instance secret");
  flags.Repeated("publish", &publish, "[HOSTIP:]HOSTPORT:TARGETIP:TARGETPORT[/udp]", 'p');
  flags.Bool("direct", &o.direct, "dial targets from the host, no agent");
  flags.Int("dial-timeout-ms", &dial_timeout_ms, "per agent channel");
  flags.Int("buffer-kib", &buffer_kib, "per TCP relay direction");
  flags.String("splice-method", &method, "auto, pipe or readwrite");
  flags.Int("udp-idle-ms", &udp_idle_ms, "UDP session idle timeout");
  flags.String("log-level", &o.log_level, "debug, info, warning, error");
  FUN_ASSIGN_OR_RETURN(auto rest, flags.Parse(args));
  if (!rest.empty()) {
    return InvalidArgumentError(
        fmt::format("unexpected argument \"{}\": see 'fun-forward --help'", rest[0]));
  }
  if (publish.empty()) {
    return InvalidArgumentError("nothing to forward: give -p HOSTPORT:TARGETIP:TARGETPORT");
  }
  if (o.direct && (!o.agent.empty() || !o.token_file.empty())) {
    return InvalidArgumentError("--direct dials targets itself: drop --agent and --token-file");
  }
  if (!o.direct) {
    if (o.agent.empty()) {
      return InvalidArgumentError("--agent is needed (or --direct): where fun-guestd listens");
    }
    if (o.token_file.empty()) {
      return InvalidArgumentError("--token-file is needed: the instance secret the agent checks");
    }
    FUN_RETURN_IF_ERROR_CTX(ParseSocketAddress(o.agent), "--agent");
  }
  for (const auto& p : publish) {
    FUN_ASSIGN_OR_RETURN(net::ForwardFlag f, net::ParseForwardFlag(p));
    o.forwards.push_back(std::move(f));
  }
  if (dial_timeout_ms < 1 || dial_timeout_ms > 600000) {
    return InvalidArgumentError(
        fmt::format("--dial-timeout-ms: {} is out of range: use 1 .. 600000", dial_timeout_ms));
  }
  if (buffer_kib < 4 || buffer_kib > 65536) {
    return InvalidArgumentError(
        fmt::format("--buffer-kib: {} is out of range: use 4 .. 65536", buffer_kib));
  }
  if (udp_idle_ms < 1) {
    return InvalidArgumentError(fmt::format("--udp-idle-ms: {} must be positive", udp_idle_ms));
  }
  if (method == "auto") {
    o.forward.splice_method = net::SpliceMethod::kAuto;
  } else if (method == "pipe") {
    o.forward.splice_method = net::SpliceMethod::kPipe;
  } else if (method == "readwrite") {
    o.forward.splice_method = net::SpliceMethod::kReadWrite;
  } else {
    return InvalidArgumentError(
        fmt::format("--splice-method: \"{}\" is not auto, pipe or readwrite", method));
  }
  o.dial_timeout = std::chrono::milliseconds(dial_timeout_ms);
  o.forward.buffer_size = static_cast<size_t>(buffer_kib) * 1024;
  o.forward.udp_idle_timeout = std::chrono::milliseconds(udp_idle_ms);
  FUN_RETURN_IF_ERROR_CTX(log::ParseLevel(o.log_level), "--log-level");
  return o;
}

int Run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err, int stop_fd) {
  for (const auto& a : args) {
    if (a == "-h" || a == "--help") {
      out << kUsage;
      return 0;
    }
  }
  auto opts = ParseArgs(args);
  if (!opts.ok()) {
    err << "fun-forward: " << opts.status().message() << "\n";
    return 2;
  }
  log::Logger& logger = log::Default();
  logger.SetStderrFormat(log::StderrFormat::kBrief, "fun-forward");
  logger.SetStderrLevel(*log::ParseLevel(opts->log_level));

  net::ChannelDialer dialer;
  if (opts->direct) {
    dialer = [](agent::Kind, const std::string& target) -> StatusOr<UniqueFd> {
      FUN_ASSIGN_OR_RETURN(agent::HostPort hp, agent::ParseTarget(target));
      return Connect(
          SocketAddress{.kind = SocketAddress::Kind::kTcp, .host = hp.host, .port = hp.port});
    };
  } else {
    auto token = agent::ReadTokenFile(opts->token_file);
    if (!token.ok()) {
      err << "fun-forward: " << token.status().message() << "\n";
      return 1;
    }
    agent::AgentEndpoint ep{.address = *ParseSocketAddress(opts->agent), .token = *token};
    dialer = [ep, timeout = opts->dial_timeout](agent::Kind kind, const std::string& target) {
      return agent::DialAgent(ep, {.kind = kind, .target = target}, timeout);
    };
  }
  for (const auto& f : opts->forwards) {
    if (opts->direct && f.protocol == Protocol::kUdp) {
      err << "fun-forward: --direct forwards TCP only (" << net::FormatForwardFlag(f) << ")\n";
      return 2;
    }
  }

  std::vector<std::unique_ptr<net::TcpForward>> tcp;
  std::vector<std::unique_ptr<net::UdpForward>> udp;
  for (const auto& f : opts->forwards) {
    net::ForwardFlag bound = f;
    if (f.protocol == Protocol::kTcp) {
      auto t = net::TcpForward::Listen(f.spec, dialer, opts->forward);
      if (!t.ok()) {
        err << "fun-forward: " << t.status().message() << "\n";
        return 1;
      }
      bound.spec.host_port = (*t)->port();
      tcp.push_back(std::move(*t));
    } else {
      auto u = net::UdpForward::Listen(f.spec, dialer, opts->forward);
      if (!u.ok()) {
        err << "fun-forward: " << u.status().message() << "\n";
        return 1;
      }
      bound.spec.host_port = (*u)->port();
      udp.push_back(std::move(*u));
    }
    out << "forwarding " << net::FormatForwardFlag(bound) << std::endl;
  }
  out << "ready" << std::endl;

  for (;;) {
    pollfd p = {stop_fd, POLLIN, 0};
    int n = ::poll(&p, 1, -1);
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  auto report = [&](const std::string& address, const char* proto, net::ForwardCounters c) {
    out << fmt::format(
        "{}/{}: {} accepted, {} dial failures, {} refused, {} bytes to the target, {} back",
        address, proto, c.accepted, c.dial_failures, c.refused, c.bytes_to_target,
        c.bytes_to_client);
    if (proto == std::string_view("udp")) {
      out << fmt::format(", {} datagrams dropped, {} evicted", c.datagrams_dropped, c.evicted);
    }
    out << std::endl;
  };
  for (auto& t : tcp) {
    t->Stop();
    report(t->address(), "tcp", t->counters());
  }
  for (auto& u : udp) {
    u->Stop();
    report(u->address(), "udp", u->counters());
  }
  return 0;
}

}  // namespace fun::forward

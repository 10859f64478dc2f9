#include "lib/vm/port_publisher.h"

#include <fmt/format.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <nlohmann/json.hpp>
#include <set>

#include "lib/base/log.h"
#include "lib/base/paths.h"
#include "lib/base/socket.h"
#include "lib/base/unique_fd.h"

namespace fun::vm {

std::string PublishTableJson(const std::vector<PublishState>& table) {
  nlohmann::json forwards = nlohmann::json::array();
  for (const PublishState& s : table) {
    forwards.push_back({{"protocol", std::string(ProtocolName(s.want.host.protocol))},
                        {"host_ip", s.want.host.ip},
                        {"host_port", s.want.host.port},
                        {"target", s.want.target},
                        {"owner", s.want.owner},
                        {"auto", s.want.auto_forward},
                        {"listening", s.listening},
                        {"error", s.error}});
  }
  return nlohmann::json{{"forwards", forwards}}.dump(2) + "\n";
}

StatusOr<std::vector<PublishState>> ParsePublishTableJson(std::string_view json) {
  auto j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("forwards") || !j["forwards"].is_array()) {
    return InvalidArgumentError("the port table is not {\"forwards\": [...]}");
  }
  std::vector<PublishState> out;
  for (size_t i = 0; i < j["forwards"].size(); ++i) {
    const nlohmann::json& f = j["forwards"][i];
    auto bad = [&] {
      return InvalidArgumentError(fmt::format("the port table's forwards[{}] is malformed", i));
    };
    if (!f.is_object()) return bad();
    PublishState s;
    const auto proto = f.value("protocol", nlohmann::json());
    const auto ip = f.value("host_ip", nlohmann::json());
    const auto port = f.value("host_port", nlohmann::json());
    if (!proto.is_string() || !ip.is_string() || !port.is_number_integer()) return bad();
    const int64_t p = port.get<int64_t>();
    if (p < 1 || p > 65535) return bad();
    const std::string proto_s = proto.get<std::string>();
    if (proto_s != "tcp" && proto_s != "udp") return bad();
    s.want.host = {.protocol = proto_s == "udp" ? Protocol::kUdp : Protocol::kTcp,
                   .ip = ip.get<std::string>(),
                   .port = static_cast<uint16_t>(p)};
    for (auto [key, field] : {std::pair{"target", &s.want.target},
                              std::pair{"owner", &s.want.owner}, std::pair{"error", &s.error}}) {
      const auto v = f.value(key, nlohmann::json(""));
      if (!v.is_string()) return bad();
      *field = v.get<std::string>();
    }
    const auto listening = f.value("listening", nlohmann::json(false));
    const auto is_auto = f.value("auto", nlohmann::json(false));
    if (!listening.is_boolean() || !is_auto.is_boolean()) return bad();
    s.listening = listening.get<bool>();
    s.want.auto_forward = is_auto.get<bool>();
    out.push_back(std::move(s));
  }
  return out;
}

StatusOr<std::vector<PublishState>> RequestPublish(const std::string& instance_dir,
                                                   std::chrono::milliseconds timeout) {
  const std::string path =
      instance_dir + "/" + std::string(InstanceFileName(InstanceFileKind::kHostdSock));
  StatusOr<UniqueFd> fd = Connect(SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = path});
  if (!fd.ok()) {
    return UnavailableError(
        fmt::format("fun-hostd does not answer on {}: {}", path, fd.status().message()));
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string got;
  char buf[16 * 1024];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return DeadlineExceededError("fun-hostd did not answer in time");
    pollfd p{.fd = fd->get(), .events = POLLIN, .revents = 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ErrnoError(errno, "waiting for fun-hostd");
    if (r == 0) continue;
    const ssize_t n = ::read(fd->get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, "reading from fun-hostd");
    if (n == 0) break;
    got.append(buf, static_cast<size_t>(n));
    if (got.size() > (16u << 20)) return InvalidArgumentError("fun-hostd's answer is too long");
  }
  return ParsePublishTableJson(got);
}

PortPublisher::PortPublisher(Opener open) : open_(std::move(open)) {}

PortPublisher::~PortPublisher() { Clear(); }

void PortPublisher::Clear() {
  std::map<Key, Entry> closing;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing.swap(entries_);
    conflicts_.clear();
  }
  // Handles are destroyed outside the lock: closing a forward waits for its relays.
}

std::vector<PublishState> PortPublisher::Apply(const std::vector<PublishRequest>& desired) {
  std::lock_guard<std::mutex> lock(mu_);
  conflicts_.clear();
  std::map<Key, const PublishRequest*> wanted;
  for (const PublishRequest& r : desired) {
    const Key key{r.host.protocol, r.host.ip, r.host.port};
    auto [it, inserted] = wanted.emplace(key, &r);
    if (!inserted) {
      if (r.auto_forward) continue;  // a listening socket that someone publishes already
      conflicts_.push_back(
          PublishState{.want = r,
                       .listening = false,
                       .error = fmt::format("{} is published by {} already",
                                            net::FormatHostPort(r.host), it->second->owner)});
    }
  }
  // Close what is not wanted any more, or wanted with another target.
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto w = wanted.find(it->first);
    if (w == wanted.end() || w->second->target != it->second.state.want.target) {
      if (it->second.handle != nullptr) {
        FUN_LOG(Info, "unpublished {} -> {} ({})", net::FormatHostPort(it->second.state.want.host),
                it->second.state.want.target, it->second.state.want.owner);
      }
      // Closed now, before anything opens: a forward that moves to a new target reuses its
      // host address.
      it = entries_.erase(it);
    } else {
      it->second.state.want = *w->second;  // the owner may have changed (a restarted container)
      ++it;
    }
  }
  // Open what is new, and retry what failed before.
  for (const auto& [key, r] : wanted) {
    Entry& e = entries_[key];
    if (e.handle != nullptr) continue;
    e.state.want = *r;
    StatusOr<Handle> h = open_(*r);
    if (h.ok()) {
      e.handle = std::move(*h);
      e.state.listening = true;
      e.state.error.clear();
      FUN_LOG(Info, "published {} -> {} ({})", net::FormatHostPort(r->host), r->target, r->owner);
    } else {
      const bool changed = e.state.error != h.status().message();
      e.state.listening = false;
      e.state.error = h.status().message();
      if (changed && !r->auto_forward) {
        FUN_LOG(Warning, "cannot publish {} for {}: {}", net::FormatHostPort(r->host), r->owner,
                h.status().message());
      }
    }
  }
  std::vector<PublishState> table = TableLocked();
  return table;
}

std::vector<PublishState> PortPublisher::Table() const {
  std::lock_guard<std::mutex> lock(mu_);
  return TableLocked();
}

std::vector<PublishState> PortPublisher::TableLocked() const {
  std::vector<PublishState> out;
  for (const auto& [key, e] : entries_) out.push_back(e.state);
  out.insert(out.end(), conflicts_.begin(), conflicts_.end());
  return out;
}

}  // namespace fun::vm

// port_publisher.h: the set of host ports an instance publishes, kept equal to what is wanted.
//
// fun-hostd wants three kinds of forwards: the instance config's `ports`, the -p ports of each
// running container (Engine::Published), and the sockets listening in the VM itself
// (auto_forward, as Lima does). It computes that wish now and then and hands it to Apply,
// which closes what is no longer wanted (or now leads elsewhere), opens what is new, and keeps
// the rest untouched, so an open connection through a forward that stays is never cut.
//
//   PortPublisher pub([&](const PublishRequest& r) { return OpenForward(r); });
//   std::vector<PublishState> table = pub.Apply(desired);   // also written to ports.json
//
// Two wishes for one host address: the first in the list wins (callers order them config,
// containers, auto), the other is reported with an error naming the winner. A forward that
// could not open (port in use) is retried on every Apply; its error stays in the table until
// then. Auto-forwards are best effort: their failures are in the table but not logged.
//
// Thread-safety: Apply and Table may be called from any thread (one mutex); the opener is
// called, and handles are destroyed, with it held.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "lib/base/status.h"
#include "lib/net/port_check.h"

namespace fun::vm {

struct PublishRequest {
  net::HostPort host;
  std::string target;  // "IP:PORT" as seen in the VM
  std::string owner;   // a container's name, "config" or "auto"
  bool auto_forward = false;
  friend bool operator==(const PublishRequest&, const PublishRequest&) = default;
};

struct PublishState {
  PublishRequest want;
  bool listening = false;
  std::string error;  // why it is not listening
};

// ports.json's content: {"forwards": [{"protocol", "host_ip", "host_port", "target", "owner",
// "auto", "listening", "error"}...]}.
std::string PublishTableJson(const std::vector<PublishState>& table);
// The inverse, for fun-doctor and `fun`; strict about types (the file could be damaged).
StatusOr<std::vector<PublishState>> ParsePublishTableJson(std::string_view json);

// Asks the instance's fun-hostd (<instance_dir>/hostd.sock) to publish now, and returns its
// table once that round is done. Unavailable when no hostd serves the instance.
StatusOr<std::vector<PublishState>> RequestPublish(const std::string& instance_dir,
                                                   std::chrono::milliseconds timeout);

class PortPublisher {
 public:
  // Whatever keeps a forward open; destroying it closes the forward.
  using Handle = std::shared_ptr<void>;
  using Opener = std::function<StatusOr<Handle>(const PublishRequest&)>;

  explicit PortPublisher(Opener open);
  ~PortPublisher();

  std::vector<PublishState> Apply(const std::vector<PublishRequest>& desired);
  std::vector<PublishState> Table() const;
  // Closes every forward (the VM ended).
  void Clear();

 private:
  using Key = std::tuple<Protocol, std::string, uint16_t>;
  struct Entry {
    PublishState state;
    Handle handle;
  };
  std::vector<PublishState> TableLocked() const;

  Opener open_;
  mutable std::mutex mu_;
  std::map<Key, Entry> entries_;
  std::vector<PublishState> conflicts_;  // wishes that lost to another for the same address
};

}  // namespace fun::vm

// listener.h: the 9P server's transports. A Listener accepts TCP or unix-socket connections
// (the unix socket is what HyperKit's virtio-9p relay connects to) and hands each connected fd
// to Server::ServeConnection on its own thread (lib/base/accept_loop.h); an already-connected
// fd (a virtio-serial port, a socketpair) goes to ServeConnection directly. Transports never
// parse: framing and decoding live in the server and the codec.
//
//   FUN_ASSIGN_OR_RETURN(auto server, p9::Server::Create(opts));
//   FUN_ASSIGN_OR_RETURN(auto l, p9::Listener::Create(server.get(), addr));
//   std::thread t([&] { (void)l->Run(); });   // until Stop()
//   l->Stop(); t.join();
//   server->Shutdown();   // ends live connections; ~Listener then joins their threads
//
// Thread-safety: Run on one thread; Stop from any thread.
#pragma once

#include <memory>
#include <string>

#include "lib/base/accept_loop.h"
#include "lib/base/socket.h"
#include "lib/base/status.h"
#include "lib/p9/server.h"

namespace fun::p9 {

class Listener {
 public:
  static StatusOr<std::unique_ptr<Listener>> Create(Server* server, const SocketAddress& addr);

  const std::string& address() const { return loop_->address(); }
  Status Run();
  void Stop() { loop_->Stop(); }

 private:
  explicit Listener(std::unique_ptr<AcceptLoop> loop) : loop_(std::move(loop)) {}
  std::unique_ptr<AcceptLoop> loop_;
};

}  // namespace fun::p9

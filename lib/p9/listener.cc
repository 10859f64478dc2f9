#include "lib/p9/listener.h"

#include "lib/base/log.h"

namespace fun::p9 {

StatusOr<std::unique_ptr<Listener>> Listener::Create(Server* server, const SocketAddress& addr) {
  FUN_ASSIGN_OR_RETURN(auto loop, AcceptLoop::Create(addr, [server](UniqueFd c, std::string peer) {
                         server->ServeConnection(c.release(), std::move(peer));
                       }));
  return std::unique_ptr<Listener>(new Listener(std::move(loop)));
}

Status Listener::Run() {
  FUN_LOG(Info, "9P server listening on {}", address());
  return loop_->Run();
}

}  // namespace fun::p9

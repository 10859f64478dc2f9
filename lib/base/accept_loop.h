// accept_loop.h: a listening socket whose connections are each handled on their own thread,
// with a clean stop. Used by every server on the host: the 9P listeners, fun-hostd's
// containerd.sock relay, and published-port listeners.
//
//   FUN_ASSIGN_OR_RETURN(auto loop, AcceptLoop::Create(addr, [](UniqueFd c, std::string peer) {
//     ... serve c until it ends ...
//   }));
//   std::thread t([&] { (void)loop->Run(); });   // until Stop()
//   loop->Stop(); t.join();   // ~AcceptLoop joins the connection threads: end them first
//
// Finished connection threads are joined as new ones arrive, so a long-lived server that saw
// 10,000 connections holds no more threads than it has live connections. A server that may
// hold thousands at once (a published port) asks for small thread stacks (AcceptLoopOptions).
//
// Accept errors never end Run but for a broken listener: running out of fds, memory or
// threads pauses accepting (10 ms, doubling up to 1 s, interrupted by Stop) with one warning
// line per 10 s at most; errors that concern one pending connection (the peer reset it,
// network errors) skip it.
// Thread-safety: Run on one thread; Stop from any thread.
#pragma once

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lib/base/socket.h"
#include "lib/base/status.h"

namespace fun {

struct AcceptLoopOptions {
  int backlog = 128;
  // The stack of each connection thread; 0: the system default (8 MiB of address space).
  size_t thread_stack_size = 0;
};

class AcceptLoop {
 public:
  using Handler = std::function<void(UniqueFd connection, std::string peer)>;

  // Binds `addr` (see Listen in socket.h: unix sockets get mode 0600).
  static StatusOr<std::unique_ptr<AcceptLoop>> Create(const SocketAddress& addr, Handler handler,
                                                      const AcceptLoopOptions& options = {});
  ~AcceptLoop();

  // The bound address ("tcp:127.0.0.1:41234" when port 0 was asked).
  const std::string& address() const { return address_; }
  // How many connection threads are live right now.
  size_t live_connections();

  // Accepts until Stop(). Transient accept errors (out of fds) are logged and retried.
  Status Run();
  void Stop();

 private:
  AcceptLoop(UniqueFd fd, UniqueFd wake_read, UniqueFd wake_write, std::string address,
             std::string unix_path, Handler handler, const AcceptLoopOptions& options);
  struct Connection {
    pthread_t thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  void ReapFinished();  // mu_ held
  // Starts the handler's thread for `c` (mu_ held). False: no thread could be made.
  bool StartConnection(UniqueFd c, std::string peer, std::string* error);
  // Sleeps up to `d`, returning early once Stop() is called.
  void PauseUnlessStopped(std::chrono::milliseconds d);

  UniqueFd fd_, wake_read_, wake_write_;
  std::string address_;
  std::string unix_path_;  // removed on destruction
  Handler handler_;
  const AcceptLoopOptions options_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::vector<Connection> connections_;
};

}  // namespace fun

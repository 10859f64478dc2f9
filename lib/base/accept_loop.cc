#include "lib/base/accept_loop.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>

#include "lib/base/log.h"

namespace fun {

StatusOr<std::unique_ptr<AcceptLoop>> AcceptLoop::Create(const SocketAddress& addr,
                                                         Handler handler) {
  FUN_ASSIGN_OR_RETURN(UniqueFd fd, Listen(addr));
  FUN_ASSIGN_OR_RETURN(std::string bound, LocalAddress(fd.get()));
  int p[2];
  if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return ErrnoError(errno, "pipe");
  std::string unix_path = addr.kind == SocketAddress::Kind::kUnix ? addr.path : "";
  return std::unique_ptr<AcceptLoop>(new AcceptLoop(std::move(fd), UniqueFd(p[0]), UniqueFd(p[1]),
                                                    std::move(bound), std::move(unix_path),
                                                    std::move(handler)));
}

AcceptLoop::AcceptLoop(UniqueFd fd, UniqueFd wake_read, UniqueFd wake_write, std::string address,
                       std::string unix_path, Handler handler)
    : fd_(std::move(fd)),
      wake_read_(std::move(wake_read)),
      wake_write_(std::move(wake_write)),
      address_(std::move(address)),
      unix_path_(std::move(unix_path)),
      handler_(std::move(handler)) {}

AcceptLoop::~AcceptLoop() {
  Stop();
  std::lock_guard lock(mu_);
  for (auto& c : connections_) {
    if (c.thread.joinable()) c.thread.join();
  }
  fd_.reset();
  if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
}

void AcceptLoop::Stop() {
  if (stopping_.exchange(true)) return;
  char c = 1;
  (void)!::write(wake_write_.get(), &c, 1);
}

size_t AcceptLoop::live_connections() {
  std::lock_guard lock(mu_);
  ReapFinished();
  return connections_.size();
}

void AcceptLoop::ReapFinished() {
  for (auto it = connections_.begin(); it != connections_.end();) {
    if (it->done->load()) {
      it->thread.join();
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

Status AcceptLoop::Run() {
  while (!stopping_.load()) {
    pollfd fds[2] = {{fd_.get(), POLLIN, 0}, {wake_read_.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "poll on " + address_);
    }
    if (fds[1].revents != 0 || stopping_.load()) break;
    if ((fds[0].revents & POLLIN) == 0) continue;
    std::string peer;
    auto conn = Accept(fd_.get(), &peer);
    if (!conn.ok()) {
      int err = conn.status().sys_errno();
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        FUN_LOG(Warning, "accepting on {}: {} (retrying)", address_, conn.status().message());
        ::usleep(50 * 1000);
        continue;
      }
      return conn.status().WithContext("accepting on " + address_);
    }
    if (peer == "unix:") peer = "unix:" + unix_path_;
    std::lock_guard lock(mu_);
    ReapFinished();
    auto done = std::make_shared<std::atomic<bool>>(false);
    auto c = std::make_shared<UniqueFd>(std::move(*conn));
    connections_.push_back({std::thread([this, c, peer, done] {
                              handler_(std::move(*c), peer);
                              done->store(true);
                            }),
                            done});
  }
  return OkStatus();
}

}  // namespace fun

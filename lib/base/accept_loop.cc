#include "lib/base/accept_loop.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "lib/base/log.h"

namespace fun {
namespace {

using Steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kFirstPause{10};
constexpr milliseconds kLongestPause{1000};
constexpr auto kWarningEvery = std::chrono::seconds(10);

// Out of a resource the whole process shares: accepting again at once would fail the same way.
bool IsResourceError(int err) {
  return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

// An error about the one pending connection (accept(2): "Linux passes already-pending network
// errors on the new socket as an error code from accept()"), or a firewall refusing it.
bool IsConnectionError(int err) {
  switch (err) {
    case ECONNABORTED:
    case EPROTO:
    case ENOPROTOOPT:
    case EHOSTDOWN:
#ifdef ENONET
    case ENONET:
#endif
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETDOWN:
    case ENETUNREACH:
    case ETIMEDOUT:
    case EPERM:
    case EINTR:
      return true;
    default:
      return false;
  }
}

struct ThreadStart {
  std::function<void()> fn;
};

void* RunThread(void* arg) {
  std::unique_ptr<ThreadStart> start(static_cast<ThreadStart*>(arg));
  start->fn();
  return nullptr;
}

}  // namespace

StatusOr<std::unique_ptr<AcceptLoop>> AcceptLoop::Create(const SocketAddress& addr, Handler handler,
                                                         const AcceptLoopOptions& options) {
  FUN_ASSIGN_OR_RETURN(UniqueFd fd, Listen(addr, options.backlog));
  FUN_ASSIGN_OR_RETURN(std::string bound, LocalAddress(fd.get()));
  // Non-blocking: a connection reset between poll and accept must not leave Run stuck in
  // accept(2), deaf to Stop.
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return ErrnoError(errno, "making " + bound + " non-blocking");
  }
  int p[2];
  if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return ErrnoError(errno, "pipe");
  std::string unix_path = addr.kind == SocketAddress::Kind::kUnix ? addr.path : "";
  return std::unique_ptr<AcceptLoop>(new AcceptLoop(std::move(fd), UniqueFd(p[0]), UniqueFd(p[1]),
                                                    std::move(bound), std::move(unix_path),
                                                    std::move(handler), options));
}

AcceptLoop::AcceptLoop(UniqueFd fd, UniqueFd wake_read, UniqueFd wake_write, std::string address,
                       std::string unix_path, Handler handler, const AcceptLoopOptions& options)
    : fd_(std::move(fd)),
      wake_read_(std::move(wake_read)),
      wake_write_(std::move(wake_write)),
      address_(std::move(address)),
      unix_path_(std::move(unix_path)),
      handler_(std::move(handler)),
      options_(options) {}

AcceptLoop::~AcceptLoop() {
  Stop();
  std::lock_guard lock(mu_);
  for (auto& c : connections_) pthread_join(c.thread, nullptr);
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
      pthread_join(it->thread, nullptr);
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

bool AcceptLoop::StartConnection(UniqueFd c, std::string peer, std::string* error) {
  auto done = std::make_shared<std::atomic<bool>>(false);
  auto start = std::make_unique<ThreadStart>();
  auto conn = std::make_shared<UniqueFd>(std::move(c));
  start->fn = [this, conn, peer = std::move(peer), done] {
    handler_(std::move(*conn), peer);
    done->store(true);
  };
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  int err = 0;
  if (options_.thread_stack_size > 0) {
    err = pthread_attr_setstacksize(
        &attr, std::max<size_t>(options_.thread_stack_size, PTHREAD_STACK_MIN));
  }
  pthread_t thread{};
  if (err == 0) err = pthread_create(&thread, &attr, &RunThread, start.get());
  pthread_attr_destroy(&attr);
  if (err != 0) {
    *error = std::strerror(err);
    return false;  // start (and with it the connection) is freed here: the peer sees a close
  }
  start.release();  // RunThread owns it now
  connections_.push_back({thread, done});
  return true;
}

void AcceptLoop::PauseUnlessStopped(milliseconds d) {
  pollfd p = {wake_read_.get(), POLLIN, 0};
  (void)::poll(&p, 1, static_cast<int>(d.count()));
}

Status AcceptLoop::Run() {
  milliseconds pause{0};
  Steady::time_point last_warning{};
  int unreported = 0;
  // One line per kWarningEvery, with how many went unsaid meanwhile.
  auto warn = [&](std::string_view what) {
    auto now = Steady::now();
    if (last_warning != Steady::time_point{} && now - last_warning < kWarningEvery) {
      ++unreported;
      return;
    }
    FUN_LOG(Warning, "accepting on {}: {} (pausing up to {} ms, then retrying){}", address_, what,
            pause.count(),
            unreported > 0 ? fmt::format("; {} more since the last such line", unreported) : "");
    last_warning = now;
    unreported = 0;
  };
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
      if (err == EAGAIN || err == EWOULDBLOCK) {
        // Nothing pending after all (the connection was reset before we took it): unless the
        // process is out of threads, for which EAGAIN comes from StartConnection below.
        continue;
      }
      if (IsResourceError(err)) {
        pause = std::clamp(pause * 2, kFirstPause, kLongestPause);
        warn(conn.status().message());
        PauseUnlessStopped(pause);
        continue;
      }
      if (IsConnectionError(err)) {
        FUN_LOG(Debug, "accepting on {}: {} (skipped)", address_, conn.status().message());
        continue;
      }
      return conn.status().WithContext("accepting on " + address_);
    }
#ifndef __linux__
    // BSD sockets inherit O_NONBLOCK from the listener; handlers expect a blocking fd.
    ::fcntl(conn->get(), F_SETFL, ::fcntl(conn->get(), F_GETFL) & ~O_NONBLOCK);
#endif
    if (peer == "unix:") peer = "unix:" + unix_path_;
    std::string error;
    bool started;
    {
      std::lock_guard lock(mu_);
      ReapFinished();
      started = StartConnection(std::move(*conn), peer, &error);
    }
    if (!started) {
      pause = std::clamp(pause * 2, kFirstPause, kLongestPause);
      warn(fmt::format("cannot start a thread for {}: {} (closed it)", peer, error));
      PauseUnlessStopped(pause);
      continue;
    }
    pause = milliseconds{0};
  }
  return OkStatus();
}

}  // namespace fun

// Server: exports, the worker pool, and the per-connection reader/writer.

#include "lib/p9/server.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <set>
#include <utility>

#include "lib/base/log.h"
#include "lib/base/unique_fd.h"

namespace fun::p9 {

struct Server::Conn {
  int fd = -1;
  std::string peer;
  bool is_socket = false;
  UniqueFd wake_read, wake_write;  // non-sockets: Shutdown writes here to end the reader's poll
  std::unique_ptr<Session> session;
  size_t max_inflight = 64;

  std::mutex write_mu;
  bool write_failed = false;  // guarded by write_mu

  struct Pending {
    bool started = false;
    bool cancelled = false;
    std::vector<uint16_t> flushes;  // Tflush tags answered once this one completes
  };
  std::mutex mu;
  std::condition_variable cv;
  std::unordered_map<uint16_t, Pending> pending;  // guarded by mu
  bool closing = false;                           // guarded by mu
};

struct Server::Request {
  std::shared_ptr<Conn> conn;
  std::string bytes;  // the whole message; frame's Data fields point into it
  Frame frame;
};

namespace {

// Messages at least this big are read straight into their own buffer, not through the
// connection's read buffer.
constexpr size_t kReadBufferSize = 128 * 1024;
constexpr size_t kDirectReadThreshold = 32 * 1024;

std::string ErrnoText(int err) { return std::strerror(err); }

// Replies are built in one buffer per thread, reused: its capacity (msize for reads) stays.
std::string& ThreadReplyBuffer() {
  thread_local std::string buf;
  return buf;
}

// Requests quick enough to run on the reader thread when they arrive alone. Left to the pool:
// what may take long (fsync, unlink of a big file, truncating setattr, creating calls on slow
// file systems).
bool RunsInline(const Message& m) {
  switch (TypeOf(m)) {
    case MsgType::kTgetattr:
    case MsgType::kTwalk:
    case MsgType::kTclunk:
    case MsgType::kTread:
    case MsgType::kTwrite:
    case MsgType::kTreaddir:
    case MsgType::kTlopen:
    case MsgType::kTstatfs:
    case MsgType::kTreadlink:
    case MsgType::kTxattrwalk:
    case MsgType::kTattach:
    case MsgType::kTlock:
    case MsgType::kTgetlock:
      return true;
    default:
      return false;
  }
}

}  // namespace

StatusOr<std::unique_ptr<Server>> Server::Create(ServerOptions options) {
  if (options.exports.empty()) return InvalidArgumentError("9P server: no exports");
  if (options.max_msize < kMinMsize) {
    return InvalidArgumentError(
        fmt::format("9P server: max_msize {} is below {}", options.max_msize, kMinMsize));
  }
  if (options.max_inflight_per_connection == 0) options.max_inflight_per_connection = 1;
  auto state = std::make_shared<internal::ServerState>();
  std::set<std::string> names;
  for (const ExportSpec& spec : options.exports) {
    if (spec.name.empty()) {
      return InvalidArgumentError(fmt::format("9P export of {}: the name is empty", spec.dir));
    }
    if (!names.insert(spec.name).second) {
      return InvalidArgumentError(fmt::format(
          "9P export name \"{}\" is used twice; give each export its own name", spec.name));
    }
    auto fs = HostFs::Open(spec.dir, HostFsOptions{.read_only = spec.read_only,
                                                   .resolver = options.resolver,
                                                   .owner = options.owner,
                                                   .fd_cache = options.fd_cache});
    if (!fs.ok()) {
      return fs.status().WithContext(fmt::format("9P export \"{}\"", spec.name));
    }
    internal::Export e;
    e.name = spec.name;
    e.dir = spec.dir;
    while (e.dir.size() > 1 && e.dir.back() == '/') e.dir.pop_back();
    if (char* real = ::realpath(spec.dir.c_str(), nullptr)) {
      e.real_dir = real;
      std::free(real);
    }
    e.fs = std::move(fs).value();
    state->exports.push_back(std::move(e));
  }
  state->options = std::move(options);
  return std::unique_ptr<Server>(new Server(std::move(state)));
}

Server::Server(std::shared_ptr<internal::ServerState> state) : state_(std::move(state)) {
  int n = state_->options.workers;
  if (n <= 0) n = std::max(4, static_cast<int>(std::thread::hardware_concurrency()));
  workers_.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

Server::~Server() {
  Shutdown();
  {
    std::unique_lock<std::mutex> lock(conns_mu_);
    conns_cv_.wait(lock, [this] { return conns_.empty(); });
  }
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    stop_workers_ = true;
  }
  queue_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

std::unique_ptr<Session> Server::NewSession() {
  return std::unique_ptr<Session>(new Session(state_));
}

Server::Stats Server::stats() const {
  return Stats{.connections_total = state_->connections_total.load(),
               .connections_active = state_->connections_active.load(),
               .requests = state_->requests.load(),
               .errors = state_->errors.load()};
}

void Server::Shutdown() {
  std::lock_guard<std::mutex> lock(conns_mu_);
  shutting_down_ = true;
  for (Conn* c : conns_) {
    {
      std::lock_guard<std::mutex> clock(c->mu);
      c->closing = true;
    }
    c->cv.notify_all();
    if (c->is_socket) {
      ::shutdown(c->fd, SHUT_RDWR);
    } else if (c->wake_write) {
      char b = 'x';
      [[maybe_unused]] ssize_t r = ::write(c->wake_write.get(), &b, 1);
    }
  }
}

void Server::ServeConnection(int fd, std::string peer_name) {
  auto conn = std::make_shared<Conn>();
  conn->fd = fd;
  conn->peer = std::move(peer_name);
  conn->session = NewSession();
  conn->max_inflight = state_->options.max_inflight_per_connection;
  struct stat st;
  conn->is_socket = ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
  if (!conn->is_socket) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) == 0) {
      conn->wake_read.reset(p[0]);
      conn->wake_write.reset(p[1]);
    }
  }
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    if (shutting_down_) {
      ::close(fd);
      return;
    }
    conns_.insert(conn.get());
  }
  state_->connections_total.fetch_add(1);
  state_->connections_active.fetch_add(1);
  FUN_LOG(Info, "9p: connection from {}", conn->peer);

  std::string reason = ReadLoop(conn);

  // Drop what has not started, wait for what runs (its reply may still go out).
  {
    std::unique_lock<std::mutex> lock(conn->mu);
    conn->closing = true;
    for (auto& [tag, p] : conn->pending) {
      if (!p.started) p.cancelled = true;
    }
    conn->cv.wait(lock, [&] { return conn->pending.empty(); });
  }
  FUN_LOG(Info, "9p: connection from {} closed: {}", conn->peer, reason);
  conn->session.reset();  // clunks every fid
  state_->connections_active.fetch_sub(1);
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    conns_.erase(conn.get());
    ::close(fd);
    conn->fd = -1;
    // Under the lock: once it is released, ~Server may run and destroy the condition variable.
    // Nothing of `this` is touched after this block.
    conns_cv_.notify_all();
  }
}

std::string Server::ReadLoop(const std::shared_ptr<Conn>& conn) {
  std::string buf(kReadBufferSize, '\0');
  size_t start = 0, end = 0;
  // Reads at least one byte into [dst, dst+cap); 0 at EOF or shutdown, -1 on error.
  auto read_some = [&](char* dst, size_t cap) -> ssize_t {
    while (true) {
      if (conn->wake_read) {
        struct pollfd pfd[2] = {{conn->fd, POLLIN, 0}, {conn->wake_read.get(), POLLIN, 0}};
        int r = ::poll(pfd, 2, -1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (pfd[1].revents != 0) return 0;
      }
      ssize_t n = ::read(conn->fd, dst, cap);
      if (n < 0 && errno == EINTR) continue;
      return n;
    }
  };
  auto eof_reason = [&](ssize_t n) {
    if (n == 0) {
      std::lock_guard<std::mutex> lock(conn->mu);
      return std::string(conn->closing ? "server shutting down" : "end of stream");
    }
    return "read error: " + ErrnoText(errno);
  };

  while (true) {
    size_t avail = end - start;
    if (avail >= 4) {
      uint32_t limit = conn->session->msize();
      auto next = NextMessageSize(std::string_view(buf.data() + start, avail), limit);
      if (!next.ok()) return next.status().message();
      size_t size = **next;
      if (avail >= size || size >= kDirectReadThreshold) {
        auto req = std::make_unique<Request>();
        if (avail >= size) {
          req->bytes.assign(buf.data() + start, size);
          start += size;
        } else {
          // A big message (a Twrite): the rest goes straight into its own buffer.
          req->bytes.resize(size);
          std::memcpy(req->bytes.data(), buf.data() + start, avail);
          start = end = 0;
          size_t have = avail;
          while (have < size) {
            ssize_t n = read_some(req->bytes.data() + have, size - have);
            if (n <= 0) return eof_reason(n);
            have += static_cast<size_t>(n);
          }
        }
        if (start == end) start = end = 0;
        std::string reason;
        if (!Dispatch(conn, std::move(req), /*alone=*/start == end, &reason)) return reason;
        continue;
      }
      // Need more of a small message: make room behind it.
      if (start + size > buf.size()) {
        std::memmove(buf.data(), buf.data() + start, avail);
        start = 0;
        end = avail;
      }
    } else if (start > 0) {
      std::memmove(buf.data(), buf.data() + start, avail);
      start = 0;
      end = avail;
    }
    ssize_t n = read_some(buf.data() + end, buf.size() - end);
    if (n <= 0) {
      if (n == 0 && end > start) return "end of stream inside a message";
      return eof_reason(n);
    }
    end += static_cast<size_t>(n);
  }
}

bool Server::Dispatch(const std::shared_ptr<Conn>& conn, std::unique_ptr<Request> req, bool alone,
                      std::string* reason) {
  auto frame = Decode(req->bytes);
  if (!frame.ok()) {
    *reason = frame.status().message();
    return false;
  }
  req->frame = std::move(frame).value();
  const uint16_t tag = req->frame.tag;

  if (std::holds_alternative<Tversion>(req->frame.msg)) {
    // Tversion resets the session: let everything in flight finish first.
    {
      std::unique_lock<std::mutex> lock(conn->mu);
      conn->cv.wait(lock, [&] { return conn->pending.empty() || conn->closing; });
      if (conn->closing) {
        *reason = "server shutting down";
        return false;
      }
    }
    std::string& reply = ThreadReplyBuffer();
    conn->session->HandleMessage(req->frame, &reply);
    Send(*conn, reply);
    return true;
  }

  std::unique_lock<std::mutex> lock(conn->mu);
  // Bounded memory: stop reading while the connection has max_inflight requests.
  conn->cv.wait(lock, [&] { return conn->pending.size() < conn->max_inflight || conn->closing; });
  if (conn->closing) {
    *reason = "server shutting down";
    return false;
  }
  if (conn->pending.count(tag) != 0) {
    *reason = fmt::format("protocol violation: tag {} reused while its request is in flight", tag);
    return false;
  }
  if (const auto* flush = std::get_if<Tflush>(&req->frame.msg)) {
    auto old = conn->pending.find(flush->oldtag);
    if (old == conn->pending.end()) {
      lock.unlock();
      std::string reply;
      Encode(tag, Rflush{}, &reply).IgnoreError();
      state_->requests.fetch_add(1, std::memory_order_relaxed);
      Send(*conn, reply);
      return true;
    }
    // Not started: it is dropped (no reply). Running: its reply goes first. Rflush follows
    // when it completes (Complete()).
    if (!old->second.started) old->second.cancelled = true;
    old->second.flushes.push_back(tag);
    Conn::Pending p;
    p.started = true;
    conn->pending.emplace(tag, std::move(p));
    state_->requests.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  if (alone && conn->pending.empty() && RunsInline(req->frame.msg)) {
    // Nothing else in flight or waiting: run it here and skip the hand-off to a worker.
    Conn::Pending p;
    p.started = true;
    conn->pending.emplace(tag, std::move(p));
    lock.unlock();
    std::string& reply = ThreadReplyBuffer();
    conn->session->HandleMessage(req->frame, &reply);
    req.reset();
    Complete(*conn, tag, &reply);
    return true;
  }
  conn->pending.emplace(tag, Conn::Pending{});
  lock.unlock();

  req->conn = conn;
  {
    std::lock_guard<std::mutex> qlock(queue_mu_);
    queue_.push_back(std::move(req));
  }
  queue_cv_.notify_one();
  return true;
}

void Server::WorkerLoop() {
  while (true) {
    std::unique_ptr<Request> req;
    {
      std::unique_lock<std::mutex> lock(queue_mu_);
      queue_cv_.wait(lock, [this] { return stop_workers_ || !queue_.empty(); });
      if (queue_.empty()) return;
      req = std::move(queue_.front());
      queue_.pop_front();
    }
    Process(std::move(req));
  }
}

void Server::Process(std::unique_ptr<Request> req) {
  std::shared_ptr<Conn> conn = std::move(req->conn);
  const uint16_t tag = req->frame.tag;
  bool run;
  {
    std::lock_guard<std::mutex> lock(conn->mu);
    Conn::Pending& p = conn->pending[tag];
    run = !p.cancelled;
    p.started = true;
  }
  if (run) {
    std::string& reply = ThreadReplyBuffer();
    conn->session->HandleMessage(req->frame, &reply);
    req.reset();  // free the request (a Twrite's payload) before writing the reply
    Complete(*conn, tag, &reply);
  } else {
    Complete(*conn, tag, nullptr);
  }
}

void Server::Complete(Conn& conn, uint16_t tag, const std::string* reply) {
  // Under the write lock, the tag leaves the in-flight table before its reply is written: a
  // client may reuse a tag as soon as it has the reply (Linux and diod do), and a Tflush that
  // no longer finds the tag sends its Rflush (also under the write lock) only after this reply.
  std::lock_guard<std::mutex> wlock(conn.write_mu);
  std::vector<uint16_t> flushes;
  auto finish = [&](uint16_t t) {
    std::lock_guard<std::mutex> lock(conn.mu);
    auto it = conn.pending.find(t);
    if (it != conn.pending.end()) {
      for (uint16_t f : it->second.flushes) flushes.push_back(f);
      conn.pending.erase(it);
    }
  };
  finish(tag);
  conn.cv.notify_all();
  if (reply != nullptr) WriteLocked(conn, *reply);
  // Rflush for every Tflush that waited on this request (and on those flushes, in turn).
  for (size_t i = 0; i < flushes.size(); ++i) {
    uint16_t f = flushes[i];
    finish(f);
    conn.cv.notify_all();
    std::string rflush;
    Encode(f, Rflush{}, &rflush).IgnoreError();
    WriteLocked(conn, rflush);
  }
}

void Server::Send(Conn& conn, std::string_view bytes) {
  std::lock_guard<std::mutex> lock(conn.write_mu);
  WriteLocked(conn, bytes);
}

void Server::WriteLocked(Conn& conn, std::string_view bytes) {
  if (conn.write_failed) return;
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = conn.is_socket
                    ? ::send(conn.fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL)
                    : ::write(conn.fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      FUN_LOG(Info, "9p: writing to {}: {}", conn.peer, ErrnoText(errno));
      conn.write_failed = true;
      // Make the reader stop too.
      if (conn.is_socket) {
        ::shutdown(conn.fd, SHUT_RDWR);
      } else if (conn.wake_write) {
        char b = 'x';
        [[maybe_unused]] ssize_t r = ::write(conn.wake_write.get(), &b, 1);
      }
      return;
    }
    done += static_cast<size_t>(n);
  }
}

}  // namespace fun::p9

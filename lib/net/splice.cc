#include "lib/net/splice.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

namespace fun::net {
namespace {

using Steady = std::chrono::steady_clock;

// Each direction moves at most this many buffers' worth per wakeup, so a fast direction
// cannot starve the other one (or the stop fd) between two polls.
constexpr int kRoundsPerWakeup = 16;
// A read/write ring starts this small (most relays carry little) and doubles each time a read
// fills it, up to the buffer size asked for.
constexpr size_t kFirstRingSize = 64 * 1024;
// A pipe starts smaller and grows the same way. Its pages are only taken while bytes are in it,
// but its size counts against the user's pipe budget (fs.pipe-user-pages-soft, 16384 pages by
// default) shared with every other pipe the user has: at the kernel's default of 16 pages, 1024
// pipes (512 idle relays) would spend it all and leave the user's next pipes 2 pages each.
constexpr size_t kFirstPipeSize = 16 * 1024;

// A ring's memory, mapped and unmapped whole: a relay that ends gives its pages back to the
// system at once (malloc would keep big freed blocks in its arenas).
class RingMemory {
 public:
  RingMemory() = default;
  explicit RingMemory(size_t size) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
      data_ = static_cast<char*>(p);
      size_ = size;
    }
  }
  RingMemory(RingMemory&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  RingMemory& operator=(RingMemory&& o) noexcept {
    if (this != &o) {
      Release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~RingMemory() { Release(); }
  char* get() const { return data_; }
  explicit operator bool() const { return data_ != nullptr; }

 private:
  void Release() {
    if (data_ != nullptr) ::munmap(data_, size_);
    data_ = nullptr;
    size_ = 0;
  }
  char* data_ = nullptr;
  size_t size_ = 0;
};

// Puts fds in non-blocking mode for the life of the scope and restores their flags after.
class NonBlockingScope {
 public:
  NonBlockingScope() = default;
  NonBlockingScope(const NonBlockingScope&) = delete;
  NonBlockingScope& operator=(const NonBlockingScope&) = delete;
  ~NonBlockingScope() {
    for (const auto& [fd, flags] : saved_) ::fcntl(fd, F_SETFL, flags);
  }

  Status Add(int fd) {
    for (int seen : seen_) {
      if (seen == fd) return OkStatus();
    }
    seen_.push_back(fd);
    int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0) return ErrnoError(errno, fmt::format("splice: fd {}", fd));
    if ((flags & O_NONBLOCK) == 0) {
      if (::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
        return ErrnoError(errno, fmt::format("splice: making fd {} non-blocking", fd));
      }
      saved_.emplace_back(fd, flags);
    }
    return OkStatus();
  }

 private:
  std::vector<int> seen_;
  std::vector<std::pair<int, int>> saved_;
};

// Blocks SIGPIPE on this thread for the life of the scope; a SIGPIPE raised meanwhile (by a
// write to a closed peer: splice(2) and writes to pipes have no MSG_NOSIGNAL) is discarded.
class SigpipeBlock {
 public:
  SigpipeBlock() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  }
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;
  ~SigpipeBlock() {
    if (!was_pending_ && sigismember(&old_, SIGPIPE) != 1) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        timespec zero{};
        while (sigtimedwait(&pipe_, nullptr, &zero) < 0 && errno == EINTR) {
        }
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t pipe_;
  sigset_t old_;
  bool was_pending_ = false;
};

bool IsSocket(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

// kAuto's choice, from perf/splice_bench.cc (1 GiB runs, unpaced loopback TCP: see
// UnpaceIfLoopback in lib/base/socket.h): between two sockets splice(2) moves the bytes faster
// and with a quarter of the relay CPU (TCP <-> TCP 4.8 vs 4.1 GB/s, 59 vs 233 relay ms/GiB;
// TCP <-> unix both ways 4.6 vs 3.2 GB/s), so sockets splice and everything else copies
// through user space. (Earlier measurements said the opposite for TCP: their sockets were
// paced by bbr, which hid the relay's cost behind the pacing timer.)
bool AutoUsesPipe(bool src_is_socket, bool dst_is_socket) { return src_is_socket && dst_is_socket; }

// One direction of the relay: bytes from src go through a buffer (a pipe for splice(2), or a
// ring in user space) to dst.
class Direction {
 public:
  Direction(int src, int dst, std::string_view from, std::string_view to, bool half_close = true)
      : src_(src), dst_(dst), from_(from), to_(to), half_close_(half_close) {}
  Direction(const Direction&) = delete;
  Direction& operator=(const Direction&) = delete;
  ~Direction() { ClosePipe(); }

  Status Init(SpliceMethod method, size_t buffer_size) {
    dst_is_socket_ = IsSocket(dst_);
    bool use_pipe = method == SpliceMethod::kPipe ||
                    (method == SpliceMethod::kAuto && AutoUsesPipe(IsSocket(src_), dst_is_socket_));
    if (use_pipe && OpenPipe(buffer_size)) return OkStatus();
    return UseReadWrite(buffer_size);
  }

  bool done() const { return done_; }
  uint64_t delivered() const { return delivered_; }
  size_t max_buffered() const { return max_buffered_; }
  int src() const { return src_; }
  int dst() const { return dst_; }
  bool WantsRead() const { return !done_ && !eof_ && !full_ && buffered_ < cap_; }
  bool WantsWrite() const { return !done_ && buffered_ > 0; }

  // Moves bytes until src or dst would block, src ends, or the round budget is spent.
  // `can_read` / `can_write`: what poll reported ready. Sets *moved when a byte moved.
  Status Pump(bool can_read, bool can_write, bool* moved) {
    for (int round = 0; round < kRoundsPerWakeup && !done_; ++round) {
      bool progress = false;
      if (can_read && WantsRead()) {
        FUN_ASSIGN_OR_RETURN(Io io, Fill());
        switch (io) {
          case Io::kMoved:
            progress = *moved = can_write = true;
            if (buffered_ == cap_) Grow();
            // Some sources give little per read (a virtio-serial port: one 4 KiB buffer):
            // gather what is there before writing it on, one write instead of many.
            if (ring_ && !Drain(&can_read)) return status_;
            break;
          case Io::kEof:
            eof_ = true;
            break;
          case Io::kBlocked:
            can_read = false;
            break;
          case Io::kFull:
            Grow();  // out of pipe slots before bytes: more slots
            break;
        }
      }
      if (can_write && buffered_ > 0) {
        FUN_ASSIGN_OR_RETURN(Io io, Flush());
        if (io == Io::kMoved) {
          progress = *moved = true;
          full_ = false;
        } else {
          can_write = false;
        }
      }
      if (eof_ && buffered_ == 0) Finish();
      if (!progress) break;
    }
    return OkStatus();
  }

 private:
  enum class Io {
    kMoved,    // some bytes moved
    kEof,      // src ended
    kBlocked,  // src (Fill) or dst (Flush) would block
    kFull,     // the pipe has no free slot although it holds fewer than cap_ bytes
  };

  bool OpenPipe(size_t buffer_size) {
    int p[2];
    if (::pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) return false;
    pipe_r_ = p[0];
    pipe_w_ = p[1];
    // kFirstPipeSize to start with (less when buffer_size asks for less; a user over
    // fs.pipe-user-pages-soft has 2 pages), grown by Grow() while a bulk transfer fills it.
    max_cap_ = std::min<size_t>(std::max<size_t>(buffer_size, 1), size_t{1} << 30);
    int size = ::fcntl(pipe_w_, F_GETPIPE_SZ);
    const size_t first = std::min(max_cap_, kFirstPipeSize);
    if (size > 0 && static_cast<size_t>(size) > first) {
      int smaller = ::fcntl(pipe_w_, F_SETPIPE_SZ, static_cast<int>(first));
      if (smaller > 0) size = smaller;
    }
    if (size <= 0) {
      ClosePipe();
      return false;
    }
    cap_ = static_cast<size_t>(size);
    max_cap_ = std::max(max_cap_, cap_);  // the kernel rounds up to a power of two pages
    return true;
  }

  void ClosePipe() {
    if (pipe_r_ >= 0) ::close(pipe_r_);
    if (pipe_w_ >= 0) ::close(pipe_w_);
    pipe_r_ = pipe_w_ = -1;
  }

  Status UseReadWrite(size_t buffer_size) {
    ClosePipe();
    max_cap_ = buffer_size == 0 ? 1 : buffer_size;
    cap_ = std::min(max_cap_, kFirstRingSize);
    ring_ = RingMemory(cap_);
    if (!ring_) return ResourceExhaustedError(fmt::format("splice: no memory for {} bytes", cap_));
    head_ = 0;
    return OkStatus();
  }

  // Reads more into the ring while src has bytes and the ring has room. False on an error
  // (kept in status_); *can_read false once src would block.
  bool Drain(bool* can_read) {
    while (WantsRead()) {
      StatusOr<Io> io = Fill();
      if (!io.ok()) {
        status_ = io.status();
        return false;
      }
      if (*io == Io::kEof) {
        eof_ = true;
        break;
      }
      if (*io == Io::kBlocked) {
        *can_read = false;
        break;
      }
      if (buffered_ == cap_) Grow();
    }
    return true;
  }

  // The buffer is full: double it (up to max_cap_). A ring's bytes move to the front in order;
  // a pipe is resized in place. Without memory (or over the user's pipe budget, or
  // fs.pipe-max-size) it stays as it is.
  void Grow() {
    if (cap_ >= max_cap_) return;
    const size_t cap = std::min(max_cap_, cap_ * 2);
    if (pipe_w_ >= 0) {
      int size = ::fcntl(pipe_w_, F_SETPIPE_SZ, static_cast<int>(cap));
      if (size > 0 && static_cast<size_t>(size) > cap_) {
        cap_ = static_cast<size_t>(size);
      } else {
        max_cap_ = cap_;  // refused: do not ask again on every fill
      }
      return;
    }
    RingMemory bigger(cap);
    if (!bigger) return;
    const size_t first = std::min(buffered_, cap_ - head_);
    std::memcpy(bigger.get(), ring_.get() + head_, first);
    std::memcpy(bigger.get() + first, ring_.get(), buffered_ - first);
    ring_ = std::move(bigger);
    cap_ = cap;
    head_ = 0;
  }

  StatusOr<Io> Fill() {
    for (;;) {
      ssize_t n;
      if (pipe_w_ >= 0) {
        n = ::splice(src_, nullptr, pipe_w_, nullptr, cap_ - buffered_,
                     SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      } else {
        if (buffered_ == 0) head_ = 0;
        size_t tail = (head_ + buffered_) % cap_;
        iovec iov[2];
        int count = 1;
        if (tail < head_) {
          iov[0] = {ring_.get() + tail, head_ - tail};
        } else {
          iov[0] = {ring_.get() + tail, cap_ - tail};
          if (head_ > 0) iov[count++] = {ring_.get(), head_};
        }
        n = ::readv(src_, iov, count);
      }
      if (n > 0) {
        buffered_ += static_cast<size_t>(n);
        max_buffered_ = std::max(max_buffered_, buffered_);
        return Io::kMoved;
      }
      if (n == 0) return Io::kEof;
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        // splice(2) says EAGAIN both when src is empty and when the pipe has no free slot
        // (each slot may hold less than a page). With bytes in the pipe, assume the latter and
        // read again once a write has freed room, so a readable src never spins the loop.
        if (pipe_w_ >= 0 && buffered_ > 0) {
          full_ = true;
          return Io::kFull;
        }
        return Io::kBlocked;
      }
      if (pipe_w_ >= 0 && err == EINVAL && buffered_ == 0) {
        // This fd does not splice (an old kernel, an exotic file): copy through user space.
        FUN_RETURN_IF_ERROR(UseReadWrite(max_cap_));
        continue;
      }
      return ErrnoError(err, fmt::format("reading from {}", from_));
    }
  }

  StatusOr<Io> Flush() {
    for (;;) {
      ssize_t n;
      if (pipe_r_ >= 0) {
        n = ::splice(pipe_r_, nullptr, dst_, nullptr, buffered_, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      } else {
        iovec iov[2];
        int count = 1;
        if (head_ + buffered_ <= cap_) {
          iov[0] = {ring_.get() + head_, buffered_};
        } else {
          iov[0] = {ring_.get() + head_, cap_ - head_};
          iov[count++] = {ring_.get(), buffered_ - (cap_ - head_)};
        }
        if (dst_is_socket_) {
          msghdr msg{};
          msg.msg_iov = iov;
          msg.msg_iovlen = static_cast<size_t>(count);
          n = ::sendmsg(dst_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        } else {
          n = ::writev(dst_, iov, count);
        }
      }
      if (n > 0) {
        size_t moved = static_cast<size_t>(n);
        buffered_ -= moved;
        delivered_ += moved;
        if (ring_) head_ = buffered_ == 0 ? 0 : (head_ + moved) % cap_;
        return Io::kMoved;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK) return Io::kBlocked;
      return ErrnoError(errno, fmt::format("writing to {}", to_));
    }
  }

  // src ended and everything was delivered: pass the EOF on.
  void Finish() {
    done_ = true;
    ClosePipe();
    ring_ = RingMemory();
    // ENOTCONN: the peer is gone already; nothing to tell it.
    if (dst_is_socket_ && half_close_) ::shutdown(dst_, SHUT_WR);
  }

  const int src_, dst_;
  const std::string_view from_, to_;
  const bool half_close_;
  bool dst_is_socket_ = false;
  int pipe_r_ = -1, pipe_w_ = -1;
  RingMemory ring_;
  size_t head_ = 0;  // ring_: index of the first buffered byte
  size_t cap_ = 0;
  size_t max_cap_ = 0;  // ring_ grows up to this
  size_t max_buffered_ = 0;
  Status status_;  // Drain's error
  size_t buffered_ = 0;
  bool full_ = false;
  bool eof_ = false;
  bool done_ = false;
  uint64_t delivered_ = 0;
};

}  // namespace

Status Splice(int a, int b, const SpliceOptions& options) {
  return Splice(SpliceEnd{a, a}, SpliceEnd{b, b}, options);
}

Status Splice(const SpliceEnd& a, const SpliceEnd& b, const SpliceOptions& options) {
  // end_with_a: b outlives the relay, so a's EOF is not passed on to it.
  Direction dirs[2] = {{a.read_fd, b.write_fd, options.a_name, options.b_name, !options.end_with_a},
                       {b.read_fd, a.write_fd, options.b_name, options.a_name}};
  struct StatsOut {
    const Direction* dirs;
    SpliceStats* out;
    ~StatsOut() {
      if (out != nullptr) {
        *out = {.a_to_b = dirs[0].delivered(),
                .b_to_a = dirs[1].delivered(),
                .max_buffered = std::max(dirs[0].max_buffered(), dirs[1].max_buffered())};
      }
    }
  } stats_out{dirs, options.stats};

  for (int fd : {a.read_fd, a.write_fd, b.read_fd, b.write_fd}) {
    if (fd < 0) return InvalidArgumentError(fmt::format("splice: bad fd {}", fd));
  }
  SigpipeBlock no_sigpipe;
  NonBlockingScope non_blocking;
  for (int fd : {a.read_fd, a.write_fd, b.read_fd, b.write_fd}) {
    FUN_RETURN_IF_ERROR(non_blocking.Add(fd));
  }
  for (Direction& d : dirs) FUN_RETURN_IF_ERROR(d.Init(options.method, options.buffer_size));

  const auto idle = options.idle_timeout;
  Steady::time_point last_activity = Steady::now();
  while (!dirs[0].done() || (!options.end_with_a && !dirs[1].done())) {
    pollfd p[5];
    for (int i = 0; i < 2; ++i) {
      p[2 * i] = {dirs[i].WantsRead() ? dirs[i].src() : -1, POLLIN, 0};
      p[2 * i + 1] = {dirs[i].WantsWrite() ? dirs[i].dst() : -1, POLLOUT, 0};
    }
    p[4] = {options.stop_fd, POLLIN, 0};
    int timeout_ms = -1;
    if (idle.count() > 0) {
      auto left = last_activity + idle - Steady::now();
      if (left <= Steady::duration::zero()) {
        return DeadlineExceededError(
            fmt::format("splice: no bytes moved between {} and {} for {} ms", options.a_name,
                        options.b_name, idle.count()));
      }
      // Round up, so the loop never wakes a hair early and polls again with 0.
      timeout_ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
    }
    int n = ::poll(p, 5, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "splice: poll");
    }
    if (p[4].revents != 0) {
      return CancelledError(
          fmt::format("splice between {} and {} stopped", options.a_name, options.b_name));
    }
    for (const pollfd& q : p) {
      if ((q.revents & POLLNVAL) != 0) {
        return InvalidArgumentError(fmt::format("splice: fd {} is not open", q.fd));
      }
    }
    bool moved = false;
    for (int i = 0; i < 2; ++i) {
      bool readable = p[2 * i].revents != 0;
      bool writable = p[2 * i + 1].revents != 0;
      if (!readable && !writable) continue;
      // A src left out of the poll (its buffer was full) may well have bytes by now: once a
      // write has made room, try it rather than wait for another round of poll.
      FUN_RETURN_IF_ERROR(dirs[i].Pump(readable || p[2 * i].fd < 0, writable, &moved));
    }
    if (moved) last_activity = Steady::now();
  }
  return OkStatus();
}

}  // namespace fun::net

#include "lib/cri/exec_stream.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <utility>
#include <vector>

#include "lib/base/socket.h"

namespace fun::cri {
namespace {

using stream::Frame;
using stream::FrameType;

constexpr size_t kStdinChunk = 32 * 1024;

int64_t RemainingMs(std::chrono::steady_clock::time_point deadline) {
  return std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(
                                  deadline - std::chrono::steady_clock::now())
                                  .count());
}

// Sends the upgrade and reads the 101; returns the bytes that came after its header (frames).
StatusOr<std::string> Upgrade(int fd, const stream::StreamUrl& url,
                              std::chrono::milliseconds timeout) {
  FUN_RETURN_IF_ERROR_CTX(WriteAll(fd, stream::EncodeUpgradeRequest(url)),
                          "sending the exec upgrade to containerd's stream server");
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string buf;
  char chunk[4096];
  while (true) {
    FUN_ASSIGN_OR_RETURN(std::optional<size_t> end, stream::ParseUpgradeResponse(buf));
    if (end) return buf.substr(*end);
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    const int ready = ::poll(&p, 1, static_cast<int>(RemainingMs(deadline)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return ErrnoError(errno, "waiting for containerd's stream server");
    if (ready == 0) {
      return DeadlineExceededError(
          fmt::format("containerd's stream server did not answer the exec upgrade within {} ms",
                      timeout.count()));
    }
    const ssize_t n = ::read(fd, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, "reading containerd's stream server's answer");
    if (n == 0) {
      // A refused upgrade may close right after its body: say what it said.
      if (!buf.empty()) {
        FUN_ASSIGN_OR_RETURN(std::optional<size_t> got,
                             stream::ParseUpgradeResponse(buf + "\r\n\r\n"));
        (void)got;
      }
      return UnavailableError(
          "containerd's stream server closed the connection before "
          "answering the exec upgrade (the URL is single-use and expires)");
    }
    buf.append(chunk, static_cast<size_t>(n));
  }
}

class Session {
 public:
  Session(int fd, const ExecStreamOptions& o) : fd_(fd), o_(o) {}

  StatusOr<int> Run(const stream::StreamUrl& url) {
    FUN_ASSIGN_OR_RETURN(std::string rest, Upgrade(fd_, url, o_.handshake_timeout));
    decoder_.Append(rest);
    // From here the socket never blocks: a write that would block waits in out_ while reading
    // goes on. Blocking writes deadlocked under load (seen in CI): we blocked sending stdin
    // while the server blocked sending us the output that would have let it read more.
    const int flags = ::fcntl(fd_, F_GETFL);
    if (flags < 0 || ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK) != 0) {
      return ErrnoError(errno, "making the exec stream non-blocking");
    }
    FUN_RETURN_IF_ERROR(OpenStreams());
    if (o_.tty) FUN_RETURN_IF_ERROR(SendResize());
    FUN_RETURN_IF_ERROR(Pump());
    if (!status_seen_) {
      return UnavailableError(
          fmt::format("the exec stream ended without the command's exit status{} (containerd or "
                      "the VM went away?)",
                      resets_));
    }
    FUN_ASSIGN_OR_RETURN(stream::ExitStatus st, stream::ParseExitStatus(status_));
    if (!st.ran) return FailedPreconditionError(st.message);
    return st.exit_code;
  }

 private:
  // Queues `bytes` and writes what the socket takes now; the rest goes when it is writable.
  Status Send(std::string_view bytes) {
    if (write_failed_) return UnavailableError("containerd's stream server stopped reading");
    out_.append(bytes);
    return Flush();
  }
  // For what may race with the server's close after the command ended (stdin, window updates,
  // resizes, pings): a failed write stops further sends, and reading on decides the outcome.
  Status SendLate(std::string_view bytes) {
    if (write_failed_) return OkStatus();
    out_.append(bytes);
    if (!Flush().ok()) write_failed_ = true;
    return OkStatus();
  }
  Status Flush() {
    while (!out_.empty()) {
      const ssize_t n = ::send(fd_, out_.data(), out_.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return OkStatus();
      if (n < 0) {
        write_failed_ = true;
        out_.clear();
        return ErrnoError(errno, "writing to containerd's stream server");
      }
      out_.erase(0, static_cast<size_t>(n));
    }
    return OkStatus();
  }

  StatusOr<uint32_t> Open(std::string_view type) {
    const uint32_t id = next_id_;
    next_id_ += 2;
    FUN_ASSIGN_OR_RETURN(std::string f,
                         stream::EncodeSynStream(hc_, id, {{"streamtype", std::string(type)}}));
    FUN_RETURN_IF_ERROR(Send(f));
    return id;
  }

  // In the order kubectl opens them; CRI's server waits for exactly the expected set.
  Status OpenStreams() {
    FUN_ASSIGN_OR_RETURN(error_id_, Open("error"));
    if (o_.stdin_fd >= 0) {
      FUN_ASSIGN_OR_RETURN(stdin_id_, Open("stdin"));
    }
    FUN_ASSIGN_OR_RETURN(stdout_id_, Open("stdout"));
    if (o_.tty) {
      FUN_ASSIGN_OR_RETURN(resize_id_, Open("resize"));
    } else {
      FUN_ASSIGN_OR_RETURN(stderr_id_, Open("stderr"));
    }
    return OkStatus();
  }

  Status SendResize() {
    if (!o_.terminal_size) return OkStatus();
    std::optional<TerminalSize> size = o_.terminal_size();
    if (!size || (size->width == 0 && size->height == 0)) return OkStatus();
    return SendLate(stream::EncodeData(resize_id_, stream::EncodeResize(size->width, size->height),
                                       /*fin=*/false));
  }

  Status Handle(Frame& f) {
    switch (f.type) {
      case FrameType::kData:
        if (!f.data.empty()) {
          if (f.stream_id == stdout_id_ && o_.on_stdout) {
            FUN_RETURN_IF_ERROR(o_.on_stdout(f.data));
          } else if (f.stream_id == stderr_id_ && stderr_id_ != 0 && o_.on_stderr) {
            FUN_RETURN_IF_ERROR(o_.on_stderr(f.data));
          } else if (f.stream_id == error_id_) {
            if (status_.size() + f.data.size() > stream::kMaxStatusBytes) {
              return DataLossError(
                  fmt::format("the exec's status is over {} bytes", stream::kMaxStatusBytes));
            }
            status_ += f.data;
          }
          // SPDY/3.1 windows: give back what was consumed (a server that does not count
          // ignores it).
          FUN_RETURN_IF_ERROR(SendLate(
              stream::EncodeWindowUpdate(f.stream_id, static_cast<uint32_t>(f.data.size()))));
        }
        if (f.stream_id == error_id_ && (f.fin() || !status_.empty())) status_seen_ = true;
        return OkStatus();
      case FrameType::kRstStream:
        // The server resets what is still open when it tears the session down (CANCEL, after
        // the status); the status, or its absence, decides the outcome.
        resets_ = fmt::format(" (it reset stream {} with SPDY status {})", f.stream_id, f.value);
        return OkStatus();
      case FrameType::kPing:
        // Answer the server's pings (even ids); ours would be odd and we send none.
        if (f.value % 2 == 0) return SendLate(stream::EncodePing(f.value));
        return OkStatus();
      case FrameType::kSynStream:
        return SendLate(stream::EncodeRstStream(f.stream_id, stream::kRstRefusedStream));
      default:
        return OkStatus();  // SYN_REPLY, SETTINGS, HEADERS, GOAWAY, WINDOW_UPDATE
    }
  }

  Status ReadStdin() {
    char buf[kStdinChunk];
    const ssize_t n = ::read(o_.stdin_fd, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return OkStatus();
    if (write_failed_) {
      stdin_closed_ = true;  // nobody takes stdin any more: stop reading it
      return OkStatus();
    }
    if (n <= 0) {
      // EOF (or EIO: a terminal hung up): close stdin in the container; output still flows.
      stdin_closed_ = true;
      return SendLate(stream::EncodeData(stdin_id_, "", /*fin=*/true));
    }
    return SendLate(stream::EncodeData(stdin_id_, std::string_view(buf, static_cast<size_t>(n)),
                                       /*fin=*/false));
  }

  Status Pump() {
    std::vector<char> buf(64 * 1024);
    // Frames that came with the 101.
    FUN_RETURN_IF_ERROR(DrainFrames());
    while (true) {
      pollfd fds[3];
      nfds_t n = 0;
      const short socket_events = static_cast<short>(POLLIN | (out_.empty() ? 0 : POLLOUT));
      fds[n++] = {.fd = fd_, .events = socket_events, .revents = 0};
      // Backpressure: no more stdin while what we have not sent yet is large.
      const bool take_stdin = o_.stdin_fd >= 0 && !stdin_closed_ && out_.size() < kMaxPending;
      const int stdin_slot = take_stdin ? static_cast<int>(n++) : -1;
      if (stdin_slot >= 0) fds[stdin_slot] = {.fd = o_.stdin_fd, .events = POLLIN, .revents = 0};
      const int resize_slot = (o_.tty && o_.resize_fd >= 0) ? static_cast<int>(n++) : -1;
      if (resize_slot >= 0) fds[resize_slot] = {.fd = o_.resize_fd, .events = POLLIN, .revents = 0};
      const int ready = ::poll(fds, n, -1);
      if (ready < 0 && errno == EINTR) continue;
      if (ready < 0) return ErrnoError(errno, "poll");
      if (resize_slot >= 0 && (fds[resize_slot].revents & (POLLIN | POLLHUP)) != 0) {
        char drain[64];
        while (::read(o_.resize_fd, drain, sizeof(drain)) == static_cast<ssize_t>(sizeof(drain))) {
        }
        FUN_RETURN_IF_ERROR(SendResize());
      }
      if (stdin_slot >= 0 &&
          (fds[stdin_slot].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) != 0) {
        FUN_RETURN_IF_ERROR(ReadStdin());
      }
      if ((fds[0].revents & POLLOUT) != 0 && !write_failed_) (void)Flush();
      if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
        const ssize_t got = ::read(fd_, buf.data(), buf.size());
        if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (got < 0 && errno == ECONNRESET) return OkStatus();  // the status decides
        if (got < 0) return ErrnoError(errno, "reading from containerd's stream server");
        if (got == 0) return OkStatus();
        decoder_.Append(std::string_view(buf.data(), static_cast<size_t>(got)));
        FUN_RETURN_IF_ERROR(DrainFrames());
      }
    }
  }

  Status DrainFrames() {
    while (true) {
      FUN_ASSIGN_OR_RETURN(std::optional<Frame> f, decoder_.Next());
      if (!f) return OkStatus();
      FUN_RETURN_IF_ERROR(Handle(*f));
    }
  }

  const int fd_;
  const ExecStreamOptions& o_;
  stream::HeaderCompressor hc_;
  stream::FrameDecoder decoder_;
  uint32_t next_id_ = 1;
  uint32_t error_id_ = 0, stdin_id_ = 0, stdout_id_ = 0, stderr_id_ = 0, resize_id_ = 0;
  bool stdin_closed_ = false;
  bool write_failed_ = false;
  std::string out_;  // written to the socket as it takes it
  static constexpr size_t kMaxPending = 256 * 1024;
  std::string resets_;
  bool status_seen_ = false;
  std::string status_;
};

}  // namespace

StatusOr<int> RunExecStream(UniqueFd conn, const stream::StreamUrl& url,
                            const ExecStreamOptions& options) {
  if (!conn) return InvalidArgumentError("RunExecStream needs a connected socket");
  Session s(conn.get(), options);
  return s.Run(url);
}

}  // namespace fun::cri

#include "lib/net/agent_stream.h"

#include <fmt/format.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <limits>

namespace fun::agent {
namespace {

using Steady = std::chrono::steady_clock;

// Waits until fd is readable: OK, or the deadline / stop / poll error.
Status WaitReadable(int fd, Steady::time_point deadline, int stop_fd, size_t have,
                    const char* what) {
  for (;;) {
    pollfd p[2] = {{fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    int n = ::poll(p, stop_fd >= 0 ? 2 : 1, MillisUntil(deadline));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, "poll");
    if (stop_fd >= 0 && p[1].revents != 0) return CancelledError("stopping");
    if (n == 0) {
      return DeadlineExceededError(
          fmt::format("no complete {} within the deadline ({} bytes arrived)", what, have));
    }
    return OkStatus();
  }
}

}  // namespace

int MillisUntil(Steady::time_point deadline) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Steady::now()).count();
  if (left <= 0) return 0;
  return left > std::numeric_limits<int>::max() ? std::numeric_limits<int>::max()
                                                : static_cast<int>(left);
}

StatusOr<ReceivedRequest> ReadAgentRequest(int fd, Steady::time_point deadline, int stop_fd,
                                           std::string* buffered) {
  char chunk[4096];
  for (;;) {
    FUN_ASSIGN_OR_RETURN(auto got, DecodeRequest(*buffered));
    if (got) return ReceivedRequest{std::move(got->first), buffered->substr(got->second)};
    FUN_RETURN_IF_ERROR(WaitReadable(fd, deadline, stop_fd, buffered->size(), "request"));
    ssize_t r = ::read(fd, chunk, sizeof(chunk));
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return ErrnoError(errno, "reading the request");
    }
    if (r == 0) {
      return OutOfRangeError(fmt::format(
          "the peer closed after {} bytes, before a complete request", buffered->size()));
    }
    buffered->append(chunk, static_cast<size_t>(r));
  }
}

StatusOr<Reply> ReadAgentReply(int fd, Steady::time_point deadline) {
  // magic[4] status[1] len[2] and then len bytes: read the header, then exactly the rest.
  std::string got;
  size_t want = 7;
  while (got.size() < want) {
    FUN_RETURN_IF_ERROR(WaitReadable(fd, deadline, -1, got.size(), "reply"));
    char chunk[512];
    ssize_t r = ::read(fd, chunk, std::min(sizeof(chunk), want - got.size()));
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return ErrnoError(errno, "reading the reply");
    }
    if (r == 0) {
      return OutOfRangeError(
          fmt::format("the peer closed after {} bytes, before a complete reply", got.size()));
    }
    got.append(chunk, static_cast<size_t>(r));
    FUN_ASSIGN_OR_RETURN(auto reply, DecodeReply(got));  // a wrong magic fails early
    if (reply) return std::move(reply->first);
    if (got.size() >= 7) {
      want = 7 + (static_cast<uint8_t>(got[5]) |
                  (static_cast<size_t>(static_cast<uint8_t>(got[6])) << 8));
    }
  }
  return DataLossError("a reply that does not decode");
}

}  // namespace fun::agent

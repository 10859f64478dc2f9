// agent_stream.h: reading one agent Request or Reply (lib/net/agent_protocol.h) off a stream
// with a deadline, for the side that waits for it: fun-guestd for the host's requests,
// fun-hostd for the guest's kP9 requests on vsock, fun-guestd for fun-hostd's reply to those.
// Never reads past the message: what follows belongs to the caller's stream.
//
//   std::string buffered;
//   auto got = ReadAgentRequest(fd, Steady::now() + 10s, stop_fd, &buffered);
//   // got->request, got->early (bytes after it, already read)
//
// Thread-safety: functions; one caller per fd.
#pragma once

#include <chrono>
#include <string>

#include "lib/base/status.h"
#include "lib/net/agent_protocol.h"

namespace fun::agent {

struct ReceivedRequest {
  Request request;
  std::string early;  // bytes the peer sent after the request
};

// Reads until one request is complete, `deadline` passes (DeadlineExceeded), the peer closes
// (OutOfRange), stop_fd (-1: none) is readable (Cancelled) or the bytes cannot be a request
// (InvalidArgument). *buffered keeps what arrived, for the caller's diagnosis.
StatusOr<ReceivedRequest> ReadAgentRequest(int fd, std::chrono::steady_clock::time_point deadline,
                                           int stop_fd, std::string* buffered);

// Reads one reply, byte-exact (nothing after it is consumed), with the same errors.
StatusOr<Reply> ReadAgentReply(int fd, std::chrono::steady_clock::time_point deadline);

// Milliseconds until `deadline` for poll(2): 0 once it passed, capped to int.
int MillisUntil(std::chrono::steady_clock::time_point deadline);

}  // namespace fun::agent

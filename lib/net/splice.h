// splice.h: relays bytes both ways between two connected streams until both directions end,
// the relay at the heart of fun-guestd (host <-> containerd, host <-> container ports), of
// fun-hostd (<instance>/containerd.sock <-> agent channel) and of the port forwards.
//
// Semantics:
//   - Half-close: when one side reaches EOF, the relay delivers what it still holds, then
//     shuts down the other side for writing (shutdown(SHUT_WR)) and keeps copying the other
//     direction. Splice returns OK once both directions have ended that way.
//   - Backpressure: each direction holds at most `buffer_size` bytes; a slow reader slows its
//     writer down instead of growing memory.
//   - An error on either side (a reset, EPIPE) ends both directions at once, as a reset
//     would: Splice returns it ("reading from host: Connection reset by peer") and drops what
//     it still held. The caller then closes both fds.
//   - `stop_fd` (an eventfd or a pipe's read end) cancels: once it is readable, Splice returns
//     Cancelled. Splice never reads from it, so one eventfd written once stops every relay a
//     server runs. `idle_timeout` ends a relay in which no byte moved for that long
//     (DeadlineExceeded).
//   - No busy loop: one thread, poll(2) for readiness, non-blocking I/O.
//
// Two data paths, picked per direction:
//   - splice(2) through a pipe (the pipe is the buffer; bytes never enter user space), used by
//     default when both fds of a direction are sockets (unix, TCP, vsock);
//   - read(2)/write(2) through a user-space ring buffer, for everything else (pipes, ttys,
//     virtio-serial ports) and as a fallback when the kernel refuses splice(2) for an fd.
// perf/splice_bench.cc compares them, 1 GiB per run, on Linux 6.18 with unpaced loopback TCP
// (UnpaceIfLoopback in lib/base/socket.h): TCP <-> TCP, splice(2) 4.8 vs 4.1 GB/s with a quarter
// of the relay CPU (59 vs 233 ms/GiB) and less in total; TCP <-> unix both ways (the containerd
// relay, a port over vsock) 4.6 vs 3.2 GB/s.
//
// While it runs, Splice puts the fds in non-blocking mode (it restores their flags before it
// returns) and blocks SIGPIPE on its own thread (a write to a closed peer is an EPIPE error,
// never a signal). The fds stay the caller's: Splice never closes them.
//
// Example (a relay thread of a server):
//   fun::net::SpliceStats stats;
//   fun::Status s = fun::net::Splice(conn.get(), upstream.get(),
//                                    {.stop_fd = server_stop_efd, .stats = &stats,
//                                     .a_name = "host", .b_name = "containerd"});
//   FUN_LOG(Info, "relay ended: {} ({} bytes up, {} down)", s, stats.a_to_b, stats.b_to_a);
//
// Thread-safety: Splice may run on many threads at once, each relay with its own fds. The
// stats are written only by the Splice call they were passed to (read them after it returns).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lib/base/status.h"

namespace fun::net {

// Bytes delivered in each direction (written to the destination, not merely read).
struct SpliceStats {
  uint64_t a_to_b = 0;
  uint64_t b_to_a = 0;
  // The most bytes one direction held at once (never more than buffer_size, which a pipe rounds
  // up to a power of two pages).
  size_t max_buffered = 0;
};

enum class SpliceMethod {
  kAuto,       // splice(2) between two sockets, read/write otherwise
  kPipe,       // splice(2) wherever the kernel accepts it (read/write where it refuses)
  kReadWrite,  // read(2)/write(2) through a user-space buffer everywhere
};

struct SpliceOptions {
  // The most each direction holds at once. The buffer (a ring of 64 KiB, or a pipe of 16 KiB)
  // doubles each time a read fills it, up to this: an idle or chatty relay costs little, a
  // bulk one gets the big reads it needs (perf/port_forward.sh, iperf3 through one
  // read/write relay on this 2-core host: 64 KiB 6.4-6.9 Gbit/s at 1.1 CPU s/GB, 1 MiB
  // 11.8-12.2 Gbit/s at 0.4). A pipe's size is rounded up to a power of two pages; it stops
  // growing at fs.pipe-max-size, or where the user's pipe budget (fs.pipe-user-pages-soft) is
  // spent.
  size_t buffer_size = 1024 * 1024;
  // Ends the relay when no byte moved in either direction for this long; 0: never.
  std::chrono::milliseconds idle_timeout{0};
  // Readable -> Cancelled. -1: none.
  int stop_fd = -1;
  SpliceMethod method = SpliceMethod::kAuto;
  // true: the relay ends (OK) once a reached EOF and everything it sent was delivered to b,
  // without waiting for b -> a, and b is not half-closed: for a b that outlives each relay,
  // such as a virtio-serial port that serves one connection after another.
  bool end_with_a = false;
  // Filled in before Splice returns, whatever it returns.
  SpliceStats* stats = nullptr;
  // What to call each side in error messages ("reading from host: ...").
  std::string_view a_name = "a";
  std::string_view b_name = "b";
};

// One side of a relay: where to read its bytes from and where to write the other side's.
// A socket or tty uses the same fd for both; a pair of pipes (stdin, stdout) does not. A write
// fd that is not a socket cannot be half-closed without closing it (it is the caller's), so
// when its direction ends Splice leaves it open: the caller's close() is the EOF.
struct SpliceEnd {
  int read_fd = -1;
  int write_fd = -1;
};

// Copies a -> b and b -> a until both directions have ended (see the top of the file).
// OK: both sides reached EOF and every byte read was delivered. Cancelled: stop_fd.
// DeadlineExceeded: idle_timeout. Otherwise the first I/O error, naming the side.
Status Splice(int a, int b, const SpliceOptions& options = {});
Status Splice(const SpliceEnd& a, const SpliceEnd& b, const SpliceOptions& options = {});

}  // namespace fun::net

// server.h: the 9P2000.L file server: exports host folders (HostFs) to 9P clients, the Linux
// kernel's v9fs above all.
//
// Two layers:
//   - Session: the protocol state of one connection (negotiated msize, fid table) and one
//     handler per request. HandleMessage(Frame) returns the whole encoded reply: no sockets, so
//     tests and fuzzers drive it directly.
//   - Server: owns the exports and a worker pool, and serves connected streams
//     (ServeConnection). The calling thread reads and decodes requests; workers run them
//     concurrently and write each reply whole (under a per-connection mutex) as soon as it is
//     ready, so replies come back in any order, matched by tag. A quick request (getattr, walk,
//     read, write, ...) that arrives alone, with nothing else in flight or buffered on its
//     connection, runs on the reader thread instead: a client waiting for each reply (diodcat,
//     a single-threaded program on v9fs) then pays no thread hand-off. Listeners (TCP, unix
//     socket, virtio-serial) are elsewhere: they accept and call ServeConnection.
//
// Protocol decisions:
//   - Tversion: msize = min(client's, max_msize); below 4096 -> Rlerror EINVAL; a version other
//     than "9P2000.L" -> Rversion "unknown". It waits for in-flight requests, then clunks every
//     fid. Other requests before a successful Tversion -> Rlerror EPROTO.
//   - Tattach: aname is an export's name, or its directory path; "" when there is one export.
//     Tauth -> Rlerror ENOENT: no authentication (the transports are private); ENOENT is what
//     diod's clients (diodcat, diodload) understand as "not required", anything else fails them.
//   - Fids: unknown fid -> EBADF; a new fid that is already in use -> EINVAL; Tlopen of an
//     open fid -> EINVAL; I/O on a fid that is not open -> EBADF.
//   - Tlopen/Tlcreate return iounit = msize - 24, so clients move msize-sized chunks.
//   - Treaddir offsets are the file system's own directory cookies (getdents64 d_off, or
//     telldir), and each open directory fid keeps its position and the entry that did not fit:
//     the Linux client's "offset of the last entry returned" continues without a seek, and any
//     other offset seeks. "." and ".." are listed.
//   - Tflush: a request still queued is dropped (its reply never sent) and Rflush sent; a
//     request already running is answered first, then Rflush follows. Either way the old reply
//     never comes after Rflush.
//   - At most max_inflight_per_connection requests per connection are queued or running; the
//     reader stops reading until one finishes (memory per connection is bounded by about
//     2 * max_inflight * msize). A tag reused while its request is in flight is a protocol
//     violation: the connection is closed (a reply to it would be ambiguous).
//   - Malformed bytes (size field < 7 or > msize, a body that does not decode) close that
//     connection only, logged with the reason; other connections go on.
//   - Lock/Tgetlock: POSIX record locks as OFD locks on the fid's open file, so fids on
//     different connections conflict; never blocks (kLockBlocked; the client retries).
//   - Xattrs: Txattrwalk reads a value (or the name list for "") into the new fid, read with
//     Tread; Txattrcreate turns the fid into a buffer filled by Twrite and set on Tclunk (size 0
//     removes the attribute, as QEMU does). Only "user." names (see host_fs.h): getting
//     security.capability answers ENODATA, which the Linux client's write path accepts.
//   - Every error is Rlerror with a Linux errno (errno_map.h). Read-only exports: EROFS.
//   - Ownership and name rules: see host_fs.h.
//
// Example:
//   FUN_ASSIGN_OR_RETURN(auto server, p9::Server::Create({.exports = {{"src", "/home/me/src"}}}));
//   std::thread t([&] { server->ServeConnection(accepted_fd, "unix:/run/fun/9p.sock"); });
//   ...
//   server->Shutdown();  // every ServeConnection returns
//   t.join();
//
// Thread-safety: Server is safe to use from many threads: ServeConnection may run in many threads
// at once, Shutdown and stats from any thread. Destroying the Server shuts it down and waits for
// every ServeConnection to return. Session::HandleMessage may be called concurrently.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "lib/base/status.h"
#include "lib/p9/codec.h"
#include "lib/p9/host_fs.h"
#include "lib/p9/messages.h"

namespace fun::p9 {

struct ExportSpec {
  std::string name;  // what clients pass as aname
  std::string dir;   // the host folder
  bool read_only = false;
};

struct ServerOptions {
  std::vector<ExportSpec> exports;
  uint32_t max_msize = 1 << 20;
  // Worker threads shared by all connections; 0 picks max(4, hardware_concurrency) since
  // requests block on the disk.
  int workers = 0;
  // Requests queued or running per connection before the reader stops reading.
  size_t max_inflight_per_connection = 64;
  // How paths are resolved beneath each export (tests run both).
  ResolverKind resolver = ResolverKind::kAuto;
  OwnerPolicy owner = OwnerPolicy::kAuto;
  // The node fd budget of every export (host_fs.h); nullptr: NodeFdCache::ForProcess(), a
  // quarter of the open-file limit.
  std::shared_ptr<NodeFdCache> fd_cache;
};

namespace internal {
struct Export {
  std::string name;
  std::string dir;
  std::string real_dir;  // dir with symlinks resolved, also accepted as aname
  std::unique_ptr<HostFs> fs;
};
struct ServerState {
  ServerOptions options;
  std::vector<Export> exports;
  std::atomic<uint64_t> connections_total{0}, connections_active{0}, requests{0}, errors{0};
};
struct Fid;
}  // namespace internal

// One connection's protocol state. Create with Server::NewSession().
class Session {
 public:
  ~Session();  // clunks every fid
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Runs one request and returns its encoded reply: the R message, or Rlerror. Tflush answers
  // Rflush at once (the connection layer does the real flushing). Thread-safe.
  std::string HandleMessage(const Frame& frame);
  // The same into *out (replacing its contents). Reusing one buffer per thread saves Tread an
  // allocation and a clear of msize bytes per request.
  void HandleMessage(const Frame& frame, std::string* out);

  // The negotiated msize (max_msize before Tversion: the framing limit).
  uint32_t msize() const { return msize_.load(std::memory_order_relaxed); }
  bool versioned() const { return versioned_.load(std::memory_order_relaxed); }
  size_t fid_count() const;

 private:
  friend class Server;
  explicit Session(std::shared_ptr<internal::ServerState> state);

  using FidPtr = std::shared_ptr<internal::Fid>;
  StatusOr<FidPtr> GetFid(uint32_t fid) const;
  StatusOr<FidPtr> GetNodeFid(uint32_t fid) const;
  Status InsertFid(uint32_t fid, FidPtr f);
  void ReplaceFid(uint32_t fid, FidPtr f);
  FidPtr TakeFid(uint32_t fid);
  void RewritePaths(const std::string& from, const std::string& to);
  const internal::Export* FindExport(const std::string& aname) const;
  uint32_t iounit() const { return msize() - kIoHeaderSize; }

  Status Dispatch(const Frame& frame, std::string* out);
  template <typename M>
  Status Handle(uint16_t tag, const M& m, std::string* out);

  std::shared_ptr<internal::ServerState> state_;
  std::atomic<uint32_t> msize_;
  std::atomic<bool> versioned_{false};
  mutable std::mutex mu_;
  std::unordered_map<uint32_t, FidPtr> fids_;
};

class Server {
 public:
  // Validates the options: at least one export, names non-empty and unique, every dir an
  // existing directory, max_msize >= 4096.
  static StatusOr<std::unique_ptr<Server>> Create(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Serves one connected stream (socket, socketpair, pipe-like fd) until EOF, a read or write
  // error, malformed bytes from the client, or Shutdown. Blocks the calling thread; takes
  // ownership of fd and closes it. Safe to call from many threads at once.
  void ServeConnection(int fd, std::string peer_name);

  // Ends every connection (shutdown(2) on sockets; a wake-up for other fds) and makes every
  // ServeConnection call, current or later, return.
  void Shutdown();

  struct Stats {
    uint64_t connections_total = 0, connections_active = 0, requests = 0, errors = 0;
  };
  Stats stats() const;

  // A session on this server's exports, for driving the protocol without a socket.
  std::unique_ptr<Session> NewSession();

 private:
  struct Conn;
  struct Request;
  explicit Server(std::shared_ptr<internal::ServerState> state);

  std::string ReadLoop(const std::shared_ptr<Conn>& conn);
  // False (with *reason) when the connection must close.
  // `alone`: nothing else is buffered behind this request, so it may run on the reader thread.
  bool Dispatch(const std::shared_ptr<Conn>& conn, std::unique_ptr<Request> req, bool alone,
                std::string* reason);
  void WorkerLoop();
  void Process(std::unique_ptr<Request> req);
  // Retires `tag` and writes its reply (none when it was flushed before it ran), then the
  // Rflush of every Tflush waiting on it.
  void Complete(Conn& conn, uint16_t tag, const std::string* reply);
  static void Send(Conn& conn, std::string_view bytes);
  static void WriteLocked(Conn& conn, std::string_view bytes);  // conn.write_mu held

  std::shared_ptr<internal::ServerState> state_;
  std::vector<std::thread> workers_;

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<std::unique_ptr<Request>> queue_;
  bool stop_workers_ = false;

  std::mutex conns_mu_;
  std::condition_variable conns_cv_;
  std::unordered_set<Conn*> conns_;
  bool shutting_down_ = false;
};

}  // namespace fun::p9

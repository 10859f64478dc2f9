#include "guest/guestd/shares.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "lib/base/files.h"
#include "lib/base/log.h"
#include "lib/base/socket.h"
#include "lib/base/strings.h"
#include "lib/net/agent_stream.h"
#include "lib/net/splice.h"

namespace fun::guestd {
namespace {

using Steady = std::chrono::steady_clock;

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string UnescapeMountField(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3') {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Whether a 9p file system is mounted at `path` (read from mountinfo: never touches the mount,
// which may be dead).
bool Is9pMountPoint(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
    std::istringstream f(line);
    std::string id, parent, dev, root, mount_point;
    f >> id >> parent >> dev >> root >> mount_point;
    size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream tail(line.substr(dash + 3));
    std::string fstype;
    tail >> fstype;
    if (fstype == "9p" && UnescapeMountField(mount_point) == path) return true;
  }
  return false;
}

Status MakeDirs(const std::string& path, mode_t mode) {
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i != path.size() && path[i] != '/') continue;
    std::string part = path.substr(0, i);
    if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST) {
      return ErrnoError(errno, "creating " + part);
    }
  }
  return OkStatus();
}

// Drops what a previous connection left in the port (a reply nobody waits for any more), so
// a new 9P session starts on a message boundary.
size_t DrainPort(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  size_t dropped = 0;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      dropped += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  ::fcntl(fd, F_SETFL, flags);
  return dropped;
}

// The relay's argv: [0] "fun-p9-relay", [1] kRelayFlag, [2] tag, [3] stats file.
bool IsRelayOf(int pid, const std::string& tag) {
  auto cmdline = ReadFileToString("/proc/" + std::to_string(pid) + "/cmdline");
  if (!cmdline.ok()) return false;
  // Our relays have no empty argument before the tag, so dropped empty runs shift nothing.
  const std::vector<std::string> argv = SplitWords(*cmdline, std::string_view("\0", 1));
  return argv.size() >= 3 && argv[1] == kRelayFlag && argv[2] == tag;
}

// The pid in a relay pid file when that process is the relay of `tag`; 0 otherwise (none, or
// the pid was reused by something else).
int LiveRelay(const std::string& pid_file, const std::string& tag) {
  auto text = ReadFileToString(pid_file);
  if (!text.ok()) return 0;
  int pid = std::atoi(text->c_str());
  return pid > 1 && IsRelayOf(pid, tag) ? pid : 0;
}

// An fd that becomes readable when process `pid` ends (pidfd_open, Linux 5.3); -1 without.
UniqueFd PidFd(int pid) {
#ifdef SYS_pidfd_open
  return UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
#else
  (void)pid;
  return UniqueFd();
#endif
}

bool ProcessAlive(int pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

// Reaps `pid` when it is our child and has ended (no zombie while fun-guestd lives).
void Reap(int pid) {
  int status = 0;
  (void)::waitpid(pid, &status, WNOHANG);
}

// Ends a relay that is not wanted any more (it holds the port another relay needs).
void EndRelay(int pid) {
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 100 && ProcessAlive(pid); ++i) {
    Reap(pid);
    ::usleep(20000);
  }
  if (ProcessAlive(pid)) ::kill(pid, SIGKILL);
  Reap(pid);
}

struct RelayCounters {
  uint64_t connections = 0, to_host = 0, from_host = 0;
};

RelayCounters ReadCounters(const std::string& path) {
  RelayCounters c;
  auto text = ReadFileToString(path);
  if (text.ok()) {
    std::istringstream in(*text);
    in >> c.connections >> c.to_host >> c.from_host;
  }
  return c;
}

// Starts `binary --p9-relay TAG STATS` with `port` and `listener` on its fds 3 and 4, in a
// session of its own, with default signal handling.
StatusOr<int> SpawnRelay(const std::string& binary, const std::string& tag,
                         const std::string& stats_file, int port, int listener) {
  // Above the target numbers first, so dup2 into 3 and 4 cannot overwrite a source.
  UniqueFd high_port(::fcntl(port, F_DUPFD_CLOEXEC, 10));
  UniqueFd high_listener(::fcntl(listener, F_DUPFD_CLOEXEC, 10));
  if (!high_port.valid() || !high_listener.valid()) return ErrnoError(errno, "dup");
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_adddup2(&fa, high_port.get(), kRelayPortFd);
  posix_spawn_file_actions_adddup2(&fa, high_listener.get(), kRelayListenFd);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGTERM);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<std::string> args = {"fun-p9-relay", kRelayFlag, tag, stats_file};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  char* envp[] = {nullptr};
  pid_t pid = 0;
  int err = ::posix_spawn(&pid, binary.c_str(), &fa, &attr, argv.data(), envp);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (err != 0) return ErrnoError(err, "starting the 9p relay " + binary);
  return static_cast<int>(pid);
}

}  // namespace

StatusOr<std::string> FindVirtioPort(const std::string& ports_dir, const std::string& name) {
  DIR* d = ::opendir(ports_dir.c_str());
  if (d == nullptr) return ErrnoError(errno, "listing " + ports_dir);
  std::string found;
  while (dirent* e = ::readdir(d)) {
    std::string entry = e->d_name;
    if (entry == "." || entry == "..") continue;
    std::ifstream in(ports_dir + "/" + entry + "/name");
    std::string port_name;
    if (in && std::getline(in, port_name) && port_name == name) {
      found = entry;
      break;
    }
  }
  ::closedir(d);
  if (found.empty()) {
    return NotFoundError(fmt::format("no virtio-serial port named {} in {}", name, ports_dir));
  }
  return found;
}

Virtio9pTag FindVirtio9pTag(const std::string& dir, const std::string& tag) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return Virtio9pTag::kAbsent;
  Virtio9pTag result = Virtio9pTag::kAbsent;
  while (dirent* e = ::readdir(d)) {
    std::string entry = e->d_name;
    if (entry == "." || entry == "..") continue;
    std::ifstream id(dir + "/" + entry + "/device");
    std::string device;
    if (!id || !std::getline(id, device) || device != "0x0009") continue;
    std::ifstream in(dir + "/" + entry + "/mount_tag");
    std::string mount_tag;
    if (!in || !std::getline(in, mount_tag, '\0')) {
      result = Virtio9pTag::kUnbound;
      continue;
    }
    // The kernel prints the tag as is, with a newline in newer kernels.
    while (!mount_tag.empty() && (mount_tag.back() == '\n' || mount_tag.back() == '\0')) {
      mount_tag.pop_back();
    }
    if (mount_tag == tag) {
      result = Virtio9pTag::kFound;
      break;
    }
  }
  ::closedir(d);
  return result;
}

StatusOr<std::unique_ptr<ShareMounter>> ShareMounter::Start(const Options& options,
                                                            std::vector<net::GuestShare> shares) {
  int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) return ErrnoError(errno, "eventfd");
  std::unique_ptr<ShareMounter> m(new ShareMounter(options, UniqueFd(efd)));
  if (!shares.empty()) FUN_RETURN_IF_ERROR(MakeDirs(options.socket_dir, 0700));
  if (!shares.empty() && ::chmod(options.socket_dir.c_str(), 0700) != 0) {
    return ErrnoError(errno, "chmod " + options.socket_dir);
  }
  for (net::GuestShare& s : shares)
    m->states_.push_back({.share = std::move(s), .status = "waiting"});
  for (size_t i = 0; i < m->states_.size(); ++i) {
    m->threads_.emplace_back([p = m.get(), i] { p->RunShare(i); });
  }
  return m;
}

ShareMounter::ShareMounter(const Options& options, UniqueFd stop)
    : options_(options), stop_(std::move(stop)) {}

ShareMounter::~ShareMounter() {
  Stop();
  for (std::thread& t : threads_) t.join();
}

void ShareMounter::Stop() {
  uint64_t one = 1;
  (void)!::write(stop_.get(), &one, sizeof one);
}

bool ShareMounter::WaitStop(std::chrono::milliseconds d) {
  pollfd p{stop_.get(), POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(d.count())) > 0;
}

std::string ShareMounter::SocketPath(const std::string& tag) const {
  return options_.socket_dir + "/" + tag + ".sock";
}

std::string ShareMounter::RelayPidPath(const std::string& tag) const {
  return options_.socket_dir + "/" + tag + ".relay";
}

std::string ShareMounter::RelayStatsPath(const std::string& tag) const {
  return options_.socket_dir + "/" + tag + ".stats";
}

std::vector<ShareMounter::State> ShareMounter::States() const {
  std::vector<State> states;
  {
    std::lock_guard lock(mu_);
    states = states_;
  }
  for (State& st : states) {
    RelayCounters c = ReadCounters(RelayStatsPath(st.share.tag));
    st.connections = c.connections;
    st.bytes_to_host = c.to_host;
    st.bytes_from_host = c.from_host;
  }
  return states;
}

struct ShareMounter::ProbeSlot {
  std::mutex mu;
  std::condition_variable cv;
  bool running = false;
  bool done = false;
  int err = 0;
  Steady::time_point started;
};

std::vector<ShareMounter::State> ShareMounter::Probe(std::chrono::milliseconds timeout) const {
  std::vector<State> states = States();
  std::vector<std::shared_ptr<ProbeSlot>> slots;
  {
    std::lock_guard lock(mu_);
    while (probes_.size() < states_.size()) probes_.push_back(std::make_shared<ProbeSlot>());
    slots = probes_;
  }
  for (size_t i = 0; i < states.size(); ++i) {
    State& st = states[i];
    if (st.status != "mounted") continue;
    ProbeSlot& slot = *slots[i];
    std::unique_lock lock(slot.mu);
    if (!slot.running) {
      slot.running = true;
      slot.done = false;
      slot.started = Steady::now();
      std::thread([p = slots[i], path = st.share.guest_path] {
        struct statvfs sv {};
        int err = ::statvfs(path.c_str(), &sv) == 0 ? 0 : errno;
        std::lock_guard l(p->mu);
        p->err = err;
        p->done = true;
        p->running = false;
        p->cv.notify_all();
      }).detach();
    }
    slot.cv.wait_for(lock, timeout, [&] { return slot.done; });
    if (slot.done) {
      st.answering = slot.err == 0;
      if (slot.err != 0)
        st.probe_error = ErrnoError(slot.err, "statfs " + st.share.guest_path).message();
    } else {
      st.probe_error = fmt::format(
          "statfs {} has not returned for {:.1f} s (the 9P server does not answer)",
          st.share.guest_path, std::chrono::duration<double>(Steady::now() - slot.started).count());
    }
  }
  return states;
}

void ShareMounter::Set(size_t i, std::string status, std::string error) {
  std::lock_guard lock(mu_);
  State& s = states_[i];
  if (status == "failed") {
    FUN_LOG(Error, "share {} ({}): {}", s.share.tag, s.share.guest_path, error);
  } else if (status != s.status) {
    FUN_LOG(Info, "share {} ({}): {}", s.share.tag, s.share.guest_path, status);
  }
  s.status = std::move(status);
  s.error = std::move(error);
}

void ShareMounter::RunShare(size_t i) {
  std::string port_name, tag;
  {
    std::lock_guard lock(mu_);
    tag = states_[i].share.tag;
    port_name = net::SharePortName(tag);
  }
  auto deadline = Steady::now() + options_.settle_timeout;
  // The transport: a virtio-9p device with the share's tag (HyperKit), else fun-hostd's vsock
  // device when the host named its port, else the share's virtio-serial port (QEMU). 9pnet_virtio
  // loads in the background at boot: while a 9P device has no driver its tag is unknown, so wait
  // for it before choosing the port.
  for (;;) {
    Virtio9pTag v = FindVirtio9pTag(options_.virtio_devices_dir, tag);
    if (v == Virtio9pTag::kFound) return MountVirtio9p(i, deadline);
    // fun-hostd's vsock device, unless a virtio-9p device carries the tag (it wins, as over
    // the serial ports).
    if (options_.vsock_port != 0 && (v == Virtio9pTag::kAbsent || Steady::now() >= deadline)) {
      return MountVsock(i, deadline);
    }
    bool has_port = FindVirtioPort(options_.ports_dir, port_name).ok();
    if (has_port && (v == Virtio9pTag::kAbsent || Steady::now() >= deadline)) break;
    if (Steady::now() >= deadline) {
      return Set(i, "failed",
                 fmt::format("neither a virtio-9p device tagged {} nor a virtio-serial port named "
                             "{} after {:.1f} s: the host did not attach the share",
                             tag, port_name,
                             std::chrono::duration<double>(options_.settle_timeout).count()));
    }
    if (WaitStop(std::chrono::milliseconds(100))) return;
  }
  // A relay that dies is replaced (and the share mounted again), at most once a second.
  while (RunRelay(i, port_name, deadline)) {
    if (WaitStop(std::chrono::seconds(1))) return;
    deadline = Steady::now() + options_.settle_timeout;
  }
}

void ShareMounter::MountVirtio9p(size_t i, Steady::time_point deadline) {
  net::GuestShare share;
  {
    std::lock_guard lock(mu_);
    share = states_[i].share;
  }
  FUN_LOG(Info, "share {}: a virtio-9p device carries it (no relay)", share.tag);
  if (!options_.mount) return Set(i, "found");
  if (Is9pMountPoint(share.guest_path)) {
    // A restarted fun-guestd: the mount is the device's, nothing to keep alive.
    return Set(i, "mounted");
  }
  if (Status s = MakeDirs(share.guest_path, 0755); !s.ok()) {
    return Set(i, "failed", std::string(s.message()));
  }
  unsigned long flags = MS_NODEV | MS_NOSUID | (share.read_only ? MS_RDONLY : 0);
  std::string data = net::NinePMountOptions(share, options_.mount_settings, "virtio");
  for (;;) {
    if (::mount(share.tag.c_str(), share.guest_path.c_str(), "9p", flags, data.c_str()) == 0) {
      return Set(i, "mounted");
    }
    int err = errno;
    // The 9p file system module may still be loading (the driver that bound the device is
    // 9pnet_virtio, a separate module).
    if (err == ENODEV && Steady::now() < deadline && !WaitStop(std::chrono::milliseconds(200))) {
      continue;
    }
    return Set(
        i, "failed",
        ErrnoError(err, fmt::format("mount -t 9p -o {} {} {}", data, share.tag, share.guest_path))
            .message());
  }
}

namespace {

// A stream to fun-hostd's 9P server for `tag`, the host's ok read. Unavailable while the vsock
// transport is not there yet (its module loads in the background at boot) or nothing listens.
StatusOr<UniqueFd> OpenVsockShare(uint32_t cid, uint32_t port, const agent::Token& token,
                                  const std::string& tag) {
  UniqueFd fd(::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    return Status(errno == EAFNOSUPPORT ? Code::kUnavailable : Code::kInternal,
                  ErrnoError(errno, "socket(AF_VSOCK)").message());
  }
  sockaddr_vm sa{};
  sa.svm_family = AF_VSOCK;
  sa.svm_cid = cid;
  sa.svm_port = port;
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    int e = errno;
    bool later = e == ENODEV || e == ENETUNREACH || e == EHOSTUNREACH || e == ECONNRESET ||
                 e == ECONNREFUSED || e == ETIMEDOUT || e == EINTR;
    return Status(later ? Code::kUnavailable : Code::kInternal,
                  ErrnoError(e, fmt::format("connect to vsock {}:{}", cid, port)).message());
  }
  FUN_ASSIGN_OR_RETURN(
      std::string req,
      agent::EncodeRequest({.token = token, .kind = agent::Kind::kP9, .target = tag}));
  FUN_RETURN_IF_ERROR(WriteAll(fd.get(), req));
  auto reply = agent::ReadAgentReply(fd.get(), Steady::now() + std::chrono::seconds(10));
  if (!reply.ok() && reply.status().code() == Code::kOutOfRange) {
    return UnavailableError("the host closed the stream before answering");  // tried again
  }
  if (!reply.ok()) return reply.status().WithContext("the host's answer to the share request");
  if (reply->status != agent::ReplyStatus::kOk) {
    return PermissionDeniedError(fmt::format("the host refused the share: {}: {}",
                                             agent::ReplyStatusName(reply->status),
                                             reply->message));
  }
  return fd;
}

}  // namespace

void ShareMounter::MountVsock(size_t i, Steady::time_point deadline) {
  net::GuestShare share;
  {
    std::lock_guard lock(mu_);
    share = states_[i].share;
  }
  if (options_.mount && Is9pMountPoint(share.guest_path)) {
    // A restarted fun-guestd: the kernel holds the mount's stream, nothing to keep alive.
    return Set(i, "mounted");
  }
  if (options_.mount) {
    if (Status s = MakeDirs(share.guest_path, 0755); !s.ok()) {
      return Set(i, "failed", std::string(s.message()));
    }
  }
  for (;;) {
    auto fd = OpenVsockShare(options_.vsock_cid, options_.vsock_port, options_.token, share.tag);
    if (!fd.ok()) {
      if (fd.status().code() == Code::kUnavailable && Steady::now() < deadline &&
          !WaitStop(std::chrono::milliseconds(200))) {
        continue;
      }
      return Set(i, "failed", "vsock: " + fd.status().message());
    }
    if (!options_.mount) {
      // Tests: the stream is open and the host said yes; nothing to mount it on.
      return Set(i, "connected");
    }
    unsigned long flags = MS_NODEV | MS_NOSUID | (share.read_only ? MS_RDONLY : 0);
    std::string data = net::NinePMountOptions(share, options_.mount_settings, "fd") +
                       fmt::format(",rfdno={},wfdno={}", fd->get(), fd->get());
    if (::mount(share.tag.c_str(), share.guest_path.c_str(), "9p", flags, data.c_str()) == 0) {
      FUN_LOG(Info, "share {}: mounted over vsock port {} (no relay)", share.tag,
              options_.vsock_port);
      return Set(i, "mounted");  // the kernel holds the stream; our fd closes
    }
    int err = errno;
    // The 9p file system module may still be loading.
    if (err == ENODEV && Steady::now() < deadline && !WaitStop(std::chrono::milliseconds(200))) {
      continue;
    }
    return Set(
        i, "failed",
        ErrnoError(err, fmt::format("mount -t 9p -o {} {} {}", data, share.tag, share.guest_path))
            .message());
  }
}

bool ShareMounter::RunRelay(size_t i, const std::string& port_name, Steady::time_point deadline) {
  net::GuestShare share;
  {
    std::lock_guard lock(mu_);
    share = states_[i].share;
  }
  const std::string pid_file = RelayPidPath(share.tag);
  const std::string sock = SocketPath(share.tag);

  // 1. A relay an earlier fun-guestd started, whose mount is still there: keep both.
  int pid = LiveRelay(pid_file, share.tag);
  bool adopted = false;
  if (pid != 0) {
    if (!options_.mount || Is9pMountPoint(share.guest_path)) {
      adopted = true;
      FUN_LOG(Info, "share {}: kept the running relay (pid {}) and its mount", share.tag, pid);
      {
        std::lock_guard lock(mu_);
        states_[i].relay_pid = pid;
        states_[i].adopted = true;
      }
      Set(i, options_.mount ? "mounted" : "relaying");
    } else {
      FUN_LOG(Warning, "share {}: ending relay {}: the share is not mounted", share.tag, pid);
      EndRelay(pid);
      pid = 0;
    }
  }

  std::thread mounter;
  if (!adopted) {
    // 2. The port (virtio_console may still be loading).
    std::string dev;
    for (;;) {
      auto found = FindVirtioPort(options_.ports_dir, port_name);
      if (found.ok()) {
        dev = options_.dev_dir + "/" + *found;
        break;
      }
      if (Steady::now() >= deadline) {
        Set(i, "failed",
            fmt::format("{} after {:.1f} s: the host did not attach the share's port",
                        found.status().message(),
                        std::chrono::duration<double>(options_.settle_timeout).count()));
        return false;
      }
      if (WaitStop(std::chrono::milliseconds(100))) return false;
    }
    UniqueFd port(::open(dev.c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY));
    if (!port.valid()) {
      Set(i, "failed", ErrnoError(errno, "opening " + dev).message());
      return false;
    }
    // 3. The socket v9fs connects to, and the relay process serving it.
    ::unlink(sock.c_str());
    auto listener = Listen(SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = sock});
    if (!listener.ok()) {
      Set(i, "failed", std::string(listener.status().message()));
      return false;
    }
    ::chmod(sock.c_str(), 0600);
    std::string binary = options_.relay_binary;
    if (binary.empty()) {
      char buf[4096];
      ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
      if (n > 0) binary.assign(buf, static_cast<size_t>(n));
    }
    ::unlink(RelayStatsPath(share.tag).c_str());
    auto spawned =
        SpawnRelay(binary, share.tag, RelayStatsPath(share.tag), port.get(), listener->get());
    if (!spawned.ok()) {
      Set(i, "failed", std::string(spawned.status().message()));
      return false;
    }
    pid = *spawned;
    if (Status s = WriteFileAtomically(pid_file, std::to_string(pid) + "\n", 0600); !s.ok()) {
      FUN_LOG(Warning, "share {}: {}", share.tag, s.message());
    }
    FUN_LOG(Info, "share {}: relay pid {} between {} and {}", share.tag, pid, sock, dev);
    {
      std::lock_guard lock(mu_);
      states_[i].relay_pid = pid;
      states_[i].adopted = false;
    }
    // 4. The mount, on a thread of its own: mount(2) waits for the server's answers, which
    // come through the relay.
    if (options_.mount) {
      mounter = std::thread([this, i, share, sock, deadline] {
        if (Status s = MakeDirs(share.guest_path, 0755); !s.ok()) {
          return Set(i, "failed", std::string(s.message()));
        }
        if (Is9pMountPoint(share.guest_path)) {
          // A mount whose relay (and socket) died: containers holding it get errors.
          FUN_LOG(Warning, "share {}: detaching the stale mount at {}", share.tag,
                  share.guest_path);
          ::umount2(share.guest_path.c_str(), MNT_DETACH);
        }
        unsigned long flags = MS_NODEV | MS_NOSUID | (share.read_only ? MS_RDONLY : 0);
        std::string data = net::NinePMountOptions(share, options_.mount_settings);
        for (;;) {
          if (::mount(sock.c_str(), share.guest_path.c_str(), "9p", flags, data.c_str()) == 0) {
            return Set(i, "mounted");
          }
          int err = errno;
          // init loads the 9p modules in the background: ENODEV until 9p is there, and
          // EINVAL ("Could not find request transport: unix") while 9p is but 9pnet_fd is
          // not yet (a mount can autoload 9p on its own).
          bool modules_loading =
              err == ENODEV || (err == EINVAL && ::access("/sys/module/9pnet_fd", F_OK) != 0);
          if (modules_loading && Steady::now() < deadline &&
              !WaitStop(std::chrono::milliseconds(200))) {
            continue;
          }
          return Set(
              i, "failed",
              ErrnoError(err, fmt::format("mount -t 9p -o {} {} {}", data, sock, share.guest_path))
                  .message());
        }
      });
    } else {
      Set(i, "relaying");
    }
  }

  // 5. Until the relay ends (a new one then takes over) or Stop (the relay stays).
  UniqueFd pidfd = PidFd(pid);
  bool died = false;
  for (;;) {
    pollfd p[2] = {{stop_.get(), POLLIN, 0}, {pidfd.get(), POLLIN, 0}};
    int n = ::poll(p, pidfd.valid() ? 2 : 1, pidfd.valid() ? -1 : 1000);
    if (n < 0 && errno != EINTR) break;
    if (n > 0 && p[0].revents != 0) break;
    if ((pidfd.valid() && n > 0 && p[1].revents != 0) || (!pidfd.valid() && !ProcessAlive(pid))) {
      died = true;
      break;
    }
    Reap(pid);  // an exited child shows as alive until reaped
  }
  if (mounter.joinable()) mounter.join();
  if (died) {
    Reap(pid);
    ::unlink(pid_file.c_str());
    Set(i, "failed", fmt::format("the relay (pid {}) ended; starting a new one", pid));
  }
  return died;
}

int RunRelayProcess(const std::vector<std::string>& args, int stop_fd) {
  if (args.size() != 3 || args[0] != kRelayFlag) {
    std::fprintf(stderr, "usage: fun-guestd %s TAG STATS_FILE (started by fun-guestd itself)\n",
                 kRelayFlag);
    return 2;
  }
  const std::string& tag = args[1];
  const std::string& stats_file = args[2];
  struct stat port_st {
  }, listen_st{};
  if (::fstat(kRelayPortFd, &port_st) != 0 || ::fstat(kRelayListenFd, &listen_st) != 0 ||
      !S_ISSOCK(listen_st.st_mode)) {
    std::fprintf(stderr,
                 "fun-guestd %s: needs the share's port on fd %d and a listening unix socket on "
                 "fd %d; fun-guestd starts it itself for each share\n",
                 kRelayFlag, kRelayPortFd, kRelayListenFd);
    return 2;
  }
  ::prctl(PR_SET_NAME, "fun-p9-relay");
  RelayCounters total;
  for (;;) {
    pollfd p[2] = {{kRelayListenFd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      FUN_LOG(Error, "9p relay {}: poll: {}", tag, std::strerror(errno));
      return 1;
    }
    if (p[1].revents != 0) return 0;
    auto conn = Accept(kRelayListenFd);
    if (!conn.ok()) {
      FUN_LOG(Warning, "9p relay {}: accept: {}", tag, conn.status().message());
      if (p[0].revents & (POLLERR | POLLHUP | POLLNVAL)) return 1;
      ::usleep(100000);
      continue;
    }
    if (size_t dropped = DrainPort(kRelayPortFd); dropped > 0) {
      FUN_LOG(Warning, "9p relay {}: dropped {} stale bytes from the port", tag, dropped);
    }
    net::SpliceStats stats;
    Status s = net::Splice(conn->get(), kRelayPortFd,
                           {.stop_fd = stop_fd,
                            .end_with_a = true,
                            .stats = &stats,
                            .a_name = "the 9p mount",
                            .b_name = "the share's port"});
    total.connections++;
    total.to_host += stats.a_to_b;
    total.from_host += stats.b_to_a;
    (void)WriteFileAtomically(
        stats_file, fmt::format("{} {} {}\n", total.connections, total.to_host, total.from_host),
        0600);
    FUN_LOG(Info, "9p relay {}: connection ended: {} ({} bytes to the host, {} from it)", tag,
            s.ok() ? "closed" : std::string(s.message()), stats.a_to_b, stats.b_to_a);
  }
}

}  // namespace fun::guestd

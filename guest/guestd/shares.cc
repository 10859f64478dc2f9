#include "guest/guestd/shares.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <condition_variable>
#include <fstream>
#include <sstream>

#include "lib/base/log.h"
#include "lib/base/socket.h"
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

std::vector<ShareMounter::State> ShareMounter::States() const {
  std::lock_guard lock(mu_);
  return states_;
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
  std::vector<State> states;
  std::vector<std::shared_ptr<ProbeSlot>> slots;
  {
    std::lock_guard lock(mu_);
    states = states_;
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
  net::GuestShare share;
  {
    std::lock_guard lock(mu_);
    share = states_[i].share;
  }
  const std::string port_name = net::SharePortName(share.tag);
  const auto deadline = Steady::now() + options_.settle_timeout;

  // 1. The port (virtio_console may still be loading).
  std::string dev;
  for (;;) {
    auto found = FindVirtioPort(options_.ports_dir, port_name);
    if (found.ok()) {
      dev = options_.dev_dir + "/" + *found;
      break;
    }
    if (Steady::now() >= deadline) {
      return Set(i, "failed",
                 fmt::format("{} after {:.1f} s: the host did not attach the share's port",
                             found.status().message(),
                             std::chrono::duration<double>(options_.settle_timeout).count()));
    }
    if (WaitStop(std::chrono::milliseconds(100))) return;
  }
  UniqueFd port(::open(dev.c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY));
  if (!port.valid()) return Set(i, "failed", ErrnoError(errno, "opening " + dev).message());

  // 2. The socket v9fs connects to.
  const std::string sock = SocketPath(share.tag);
  ::unlink(sock.c_str());
  auto listener = Listen(SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = sock});
  if (!listener.ok()) return Set(i, "failed", std::string(listener.status().message()));
  ::chmod(sock.c_str(), 0600);

  // 3. The mount, on a thread of its own: mount(2) waits for the server's answers, which come
  // through the relay below.
  std::thread mounter;
  if (options_.mount) {
    mounter = std::thread([this, i, share, sock, deadline] {
      if (Status s = MakeDirs(share.guest_path, 0755); !s.ok()) {
        return Set(i, "failed", std::string(s.message()));
      }
      if (Is9pMountPoint(share.guest_path)) {
        // A previous fun-guestd's mount: its relay (and socket) died with it.
        FUN_LOG(Warning, "share {}: detaching the stale mount at {}", share.tag, share.guest_path);
        ::umount2(share.guest_path.c_str(), MNT_DETACH);
      }
      unsigned long flags = MS_NODEV | MS_NOSUID | (share.read_only ? MS_RDONLY : 0);
      std::string data = net::NinePMountOptions(share, options_.mount_settings);
      for (;;) {
        if (::mount(sock.c_str(), share.guest_path.c_str(), "9p", flags, data.c_str()) == 0) {
          return Set(i, "mounted");
        }
        int err = errno;
        // init loads the 9p modules in the background: ENODEV until 9p is there, and EINVAL
        // ("Could not find request transport: unix") while 9p is but 9pnet_fd is not yet (a
        // mount can autoload 9p on its own).
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

  // 4. Relay one connection at a time until Stop.
  for (;;) {
    pollfd p[2] = {{listener->get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      Set(i, "failed", ErrnoError(errno, "poll").message());
      break;
    }
    if (p[1].revents != 0) break;
    auto conn = Accept(listener->get());
    if (!conn.ok()) {
      FUN_LOG(Warning, "share {}: accept: {}", share.tag, conn.status().message());
      if (WaitStop(std::chrono::milliseconds(100))) break;
      continue;
    }
    if (size_t dropped = DrainPort(port.get()); dropped > 0) {
      FUN_LOG(Warning, "share {}: dropped {} stale bytes from {}", share.tag, dropped, dev);
    }
    net::SpliceStats stats;
    Status s = net::Splice(conn->get(), port.get(),
                           {.stop_fd = stop_.get(),
                            .end_with_a = true,
                            .stats = &stats,
                            .a_name = "the 9p mount",
                            .b_name = dev});
    {
      std::lock_guard lock(mu_);
      State& st = states_[i];
      st.connections++;
      st.bytes_to_host += stats.a_to_b;
      st.bytes_from_host += stats.b_to_a;
    }
    FUN_LOG(Info, "share {}: connection ended: {} ({} bytes to the host, {} from it)", share.tag,
            s.ok() ? "closed" : std::string(s.message()), stats.a_to_b, stats.b_to_a);
  }
  listener->reset();
  ::unlink(sock.c_str());
  if (mounter.joinable()) mounter.join();
}

}  // namespace fun::guestd

#include "lib/vm/hostd.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "lib/base/files.h"
#include "lib/base/log.h"
#include "lib/net/agent_stream.h"
#if defined(__linux__)
#include "lib/vsock/device.h"
#endif
#include "lib/base/strings.h"
#include "lib/cri/client.h"
#include "lib/cri/engine.h"
#include "lib/net/listen_ports.h"
#include "lib/net/port_forward.h"
#include "lib/net/share_table.h"
#include "lib/net/splice.h"
#include "lib/vm/accel.h"
#include "lib/vm/hyperkit_command.h"
#include "lib/vm/image.h"
#include "lib/vm/initrd_cpio.h"
#include "lib/vm/instance.h"
#include "lib/vm/pidfile.h"
#include "lib/vm/qemu_command.h"
#include "lib/vm/qmp.h"

namespace fun::vm {

using namespace std::chrono_literals;

namespace {

int64_t WallMs(Clock& c) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(c.Now().time_since_epoch()).count();
}

// A free loopback port for QEMU's hostfwd (QEMU binds it itself, so this is a best guess
// that StartVm retries once if QEMU loses the race).
StatusOr<uint16_t> PickFreePort() {
  FUN_ASSIGN_OR_RETURN(UniqueFd fd, Listen(*ParseSocketAddress("tcp:127.0.0.1:0")));
  FUN_ASSIGN_OR_RETURN(std::string addr, LocalAddress(fd.get()));
  FUN_ASSIGN_OR_RETURN(SocketAddress a, ParseSocketAddress(addr));
  return a.port;
}

}  // namespace

StatusOr<std::unique_ptr<Hostd>> Hostd::Create(HostdOptions options) {
  if (options.runner == nullptr) options.runner = &ProcessRunner::Default();
  if (options.clock == nullptr) options.clock = &Clock::Real();
  FUN_RETURN_IF_ERROR(ValidateInstanceName(options.instance));
  return std::unique_ptr<Hostd>(new Hostd(std::move(options)));
}

Hostd::Hostd(HostdOptions options)
    : o_(std::move(options)),
      dir_(o_.paths.InstanceDir(o_.instance)),
      dial_slots_(std::max(1, o_.max_concurrent_dials)) {
  // Each published port: a forward whose connections (TCP) or sessions (UDP) are agent
  // channels to the target inside the VM.
  publisher_ = std::make_unique<PortPublisher>(
      [this](const PublishRequest& r) -> StatusOr<PortPublisher::Handle> {
        net::ChannelDialer dial = [this](agent::Kind kind,
                                         const std::string& target) -> StatusOr<UniqueFd> {
          {
            std::unique_lock lock(dial_mu_);
            if (!dial_cv_.wait_for(lock, 60s, [this] { return dial_slots_ > 0; })) {
              return UnavailableError("too many connections are waiting for the VM's agent");
            }
            --dial_slots_;
          }
          // Generous: a burst of connections into a VM under TCG queues at the agent.
          StatusOr<UniqueFd> fd = agent::DialAgent(agent_, {.kind = kind, .target = target}, 30s);
          {
            std::lock_guard lock(dial_mu_);
            ++dial_slots_;
          }
          dial_cv_.notify_one();
          return fd;
        };
        net::ForwardSpec spec{.host_ip = r.host.ip, .host_port = r.host.port, .target = r.target};
        if (r.host.protocol == Protocol::kUdp) {
          FUN_ASSIGN_OR_RETURN(auto f, net::UdpForward::Listen(spec, std::move(dial), {}));
          return PortPublisher::Handle(std::move(f));
        }
        FUN_ASSIGN_OR_RETURN(auto f, net::TcpForward::Listen(spec, std::move(dial), {}));
        return PortPublisher::Handle(std::move(f));
      });
}

Hostd::~Hostd() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

std::string Hostd::File(InstanceFileKind kind) const {
  return o_.paths.InstanceFile(o_.instance, kind);
}
std::string Hostd::File(std::string_view name) const { return dir_ + "/" + std::string(name); }

void Hostd::SaveState() {
  Status s = SaveInstanceState(dir_, state_);
  if (!s.ok()) FUN_LOG(Warning, "saving state: {}", s.message());
}

Status Hostd::Prepare() {
  // One hostd per instance.
  std::string lock_path = File("hostd.lock");
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) return ErrnoError(errno, "opening " + lock_path);
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return AlreadyExistsError(
          fmt::format("instance {} is already run by another fun-hostd", o_.instance));
    }
    return ErrnoError(errno, "locking " + lock_path);
  }
  FUN_ASSIGN_OR_RETURN(config_, LoadInstanceConfigFile(File(InstanceFileKind::kConfig),
                                                       InstanceConfig{.name = o_.instance}));
  FUN_ASSIGN_OR_RETURN(agent_.token, agent::ReadTokenFile(File("secret")));
  auto old = LoadInstanceState(dir_);
  std::lock_guard lock(mu_);
  if (old.ok()) state_.last_exit = old->last_exit;
  state_.backend = std::string(BackendName(config_.backend));
  // macOS: ~/Library/Logs/Fun/linuxkit.log follows the console. Not worth failing a start.
  if (Status s = LinkConsoleForUser(o_.paths, o_.instance); !s.ok()) {
    FUN_LOG(Warning, "{} (the console is still in {})", s.message(),
            File(InstanceFileKind::kConsoleLog));
  }
  return OkStatus();
}

Status Hostd::StartVm() {
  if (config_.backend == Backend::kNative) {
    return UnimplementedError(
        fmt::format("backend native runs no VM and has no fun-hostd: set \"backend\": \"qemu\" "
                    "in {}",
                    File(InstanceFileKind::kConfig)));
  }
  FUN_ASSIGN_OR_RETURN(AccelChoice accel,
                       ChooseAccel(config_.accel, config_.backend,
                                   o_.host_facts ? *o_.host_facts : ProbeHostFacts()));
  {
    std::lock_guard lock(mu_);
    state_.accel = std::string(AccelName(accel.accel));
    state_.accel_reason = accel.reason;
  }
  FUN_LOG(Info, "accelerator {}: {}", AccelName(accel.accel), accel.reason);

  // The persistent data disk: a sparse raw file, formatted by the guest on its first boot.
  std::string disk = File(InstanceFileKind::kDataImage);
  if (::access(disk.c_str(), F_OK) != 0) {
    int fd = ::open(disk.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return ErrnoError(errno, "creating " + disk);
    int rc = ::ftruncate(fd, static_cast<off_t>(config_.disk_gib) << 30);
    int err = errno;
    ::close(fd);
    if (rc != 0) return ErrnoError(err, "sizing " + disk);
    FUN_LOG(Info, "created data disk {} ({} GiB, sparse)", disk, config_.disk_gib);
  }

  FUN_ASSIGN_OR_RETURN(ImageFiles image, ReadImageFiles(o_.image_dir));
  // Keep the previous boot's console for the doctor.
  std::string console = File(InstanceFileKind::kConsoleLog);
  ::rename(console.c_str(), (console + ".1").c_str());
  FUN_ASSIGN_OR_RETURN(std::vector<std::string> share_tags, ServeShares());
  FUN_RETURN_IF_ERROR(ServeVsock());
  if (config_.backend == Backend::kHyperkit) {
    return StartHyperkit(image, disk, console, share_tags);
  }
  return StartQemu(accel, image, disk, console, share_tags);
}

Status Hostd::LaunchHypervisor(const Command& cmd, std::string_view what) {
  FUN_LOG(Info, "starting {}", cmd.ToString());
  {
    std::lock_guard lock(mu_);
    state_.started_at_ms = WallMs(*o_.clock);
  }
  auto p = o_.runner->Start(cmd);
  if (!p.ok()) return p.status().WithContext("starting the hypervisor");
  // A hypervisor that cannot start (QEMU: the forwarded port was taken meanwhile; hyperkit:
  // no rights for vmnet) fails fast: give it a moment to say so.
  auto early = (*p)->Wait(300ms);
  if (early.ok()) {
    Status last = CheckExit(cmd, *early);
    if (last.ok()) last = UnavailableError(fmt::format("{} exited at once", what));
    return Status(last.code(), fmt::format("{} ({}'s messages are in {})", last.message(), what,
                                           File(InstanceFileKind::kHostdLog)));
  }
  vm_ = std::move(*p);
  return WritePidFile(File(InstanceFileKind::kVmPid), vm_->pid());
}

Status Hostd::StartQemu(const AccelChoice& accel, const ImageFiles& image, const std::string& disk,
                        const std::string& console, const std::vector<std::string>& share_tags) {
  if (!o_.qemu_extra_args.empty()) {
    FUN_LOG(Warning, "{}: appending to QEMU's command line (for measurements and debugging): {}",
            kQemuExtraArgsEnv, fmt::join(o_.qemu_extra_args, " "));
  }
  Status last;
  for (int attempt = 0; attempt < 2; ++attempt) {
    uint16_t port = o_.agent_port;
    if (port == 0) {
      FUN_ASSIGN_OR_RETURN(port, PickFreePort());
    }
    QemuSpec spec{.binary = o_.qemu_binary,
                  .machine = o_.machine,
                  .accel = accel.accel,
                  .tcg_multi_thread = config_.tcg_threads == "multi",
                  .cpus = config_.cpus,
                  .memory_mib = config_.memory_mib,
                  .kernel = image.kernel,
                  .initrd = image.initrd,
                  // Over vsock the guest agent listens there too (guest/init).
                  .cmdline = image.cmdline + (agent_over_vsock_ ? " fun.agent=tcp+vsock" : ""),
                  .data_disk = disk,
                  .system_disk = image.system_disk,
                  .system_disk_serial = image.system_disk_serial,
                  .console_log = console,
                  .qmp_socket = File("qmp.sock"),
                  .pid_file = "",
                  .secret_file = File("secret"),
                  .agent_host_port = port,
                  .share_tags = share_tags,
                  .p9_socket = share_tags.empty() ? "" : File("p9.sock"),
                  .share_table_file = share_tags.empty() ? "" : File("shares"),
                  .vsock_socket = vsock_device_ ? File("vsock.sock") : "",
                  .p9_vsock_port = shares_over_vsock_ ? kP9VsockPort : 0,
                  .extra_args = o_.qemu_extra_args};
    FUN_RETURN_IF_ERROR(ValidateQemuSpec(spec));
    Command cmd{.program = o_.qemu_binary, .args = BuildQemuArgs(spec), .capture_output = false};
    cmd.stdout_file = File(InstanceFileKind::kHostdLog);
    cmd.stderr_file = File(InstanceFileKind::kHostdLog);
    cmd.parent_death_signal = SIGTERM;
    // QEMU fails fast when the forwarded port was taken meanwhile: one retry on another port.
    last = LaunchHypervisor(cmd, "QEMU");
    if (!last.ok()) {
      FUN_LOG(Warning, "qemu exited at once (attempt {} of 2): {}", attempt + 1, last.message());
      continue;
    }
    agent_.address =
        SocketAddress{.kind = SocketAddress::Kind::kTcp, .host = "127.0.0.1", .port = port};
    std::lock_guard lock(mu_);
    state_.agent_port = port;  // the hostfwd stays: the guest listens on tcp too
    if (agent_over_vsock_) {
      // fun-hostd, the CLIs (state.json) and the doctor dial the guest through the device.
      agent_.address =
          SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = File("vsock.connect")};
      agent_.vsock_connect_port = agent::kGuestAgentPort;
      state_.agent_vsock_connect = agent_.address.path;
      state_.agent_vsock_port = agent::kGuestAgentPort;
    }
    return OkStatus();
  }
  return last.ok() ? InternalError("qemu did not start") : last;
}

namespace {

// A random (version 4) UUID, for hyperkit's -U.
StatusOr<std::string> NewUuid() {
  unsigned char b[16];
  int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "opening /dev/urandom");
  Status r = ReadExactly(fd, reinterpret_cast<char*>(b), sizeof(b));
  ::close(fd);
  FUN_RETURN_IF_ERROR(r);
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);
  std::string hex;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) hex += '-';
    hex += fmt::format("{:02x}", b[i]);
  }
  return hex;
}

}  // namespace

Status Hostd::StartHyperkit(const ImageFiles& image, const std::string& disk,
                            const std::string& console,
                            const std::vector<std::string>& share_tags) {
  // No fw_cfg in hyperkit: the secret and the share table travel in a cpio appended to the
  // image's initrd (0600 in the instance directory, as the secret itself).
  FUN_ASSIGN_OR_RETURN(std::string secret, ReadFileToString(File("secret")));
  std::string table;
  if (!share_tags.empty()) {
    FUN_ASSIGN_OR_RETURN(table, ReadFileToString(File("shares")));
  }
  FUN_ASSIGN_OR_RETURN(std::string cpio, InstanceFilesArchive(secret, table));
  std::string initrd = File("initrd.img");
  FUN_RETURN_IF_ERROR(WriteAppendedInitrd(image.initrd, cpio, initrd));

  // The vmnet interface id: kept, so the VM keeps its MAC and its DHCP lease across starts.
  std::string uuid_file = File("vmnet-uuid");
  std::string uuid;
  if (auto u = ReadFileToString(uuid_file); u.ok()) uuid = std::string(TrimSpace(*u));
  if (!IsHyperkitUuid(uuid)) {
    FUN_ASSIGN_OR_RETURN(uuid, NewUuid());
    FUN_RETURN_IF_ERROR(WriteFileAtomically(uuid_file, uuid + "\n", 0600));
  }

  // hyperkit creates <vsock>/connect itself; a stale one (a killed hyperkit) is removed, as is a
  // stale pid file (hyperkit creates it O_EXCL and fails when it exists).
  std::string vsock = File("vsock");
  if (::mkdir(vsock.c_str(), 0700) != 0 && errno != EEXIST) {
    return ErrnoError(errno, "creating " + vsock);
  }
  ::unlink((vsock + "/connect").c_str());
  std::string pid_file = File("hyperkit.pid");
  ::unlink(pid_file.c_str());

  // The guest finds its disks by slot order (hyperkit's virtio-blk serial is a hash of the
  // path) and its address by DHCP from vmnet; its agent listens on vsock.
  std::string cmdline = image.cmdline + " fun.ip=dhcp fun.agent=vsock fun.disk=/dev/vda";
  if (!image.system_disk.empty()) cmdline += " fun.system=/dev/vdb";
  HyperkitSpec spec{.binary = o_.hyperkit_binary,
                    .cpus = config_.cpus,
                    .memory_mib = config_.memory_mib,
                    // kexec loads a bzImage: the PVH build is QEMU's.
                    .kernel = o_.image_dir + "/fun-kernel",
                    .initrd = initrd,
                    .cmdline = cmdline,
                    .data_disk = disk,
                    .system_disk = image.system_disk,
                    .pid_file = pid_file,
                    .vsock_dir = vsock,
                    .uuid = uuid,
                    .p9_socket = share_tags.empty() ? "" : File("p9.sock")};
  for (const std::string& tag : share_tags) spec.shares.push_back({.tag = tag});
  FUN_RETURN_IF_ERROR(ValidateHyperkitSpec(spec));
  Command cmd{
      .program = o_.hyperkit_binary, .args = BuildHyperkitArgs(spec), .capture_output = false};
  cmd.stdout_file = console;  // com1 is hyperkit's stdio
  cmd.stderr_file = File(InstanceFileKind::kHostdLog);
  cmd.parent_death_signal = SIGTERM;
  FUN_RETURN_IF_ERROR(LaunchHypervisor(cmd, "hyperkit"));
  agent_.address = SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = vsock + "/connect"};
  agent_.vsock_connect_port = agent::kGuestAgentPort;
  std::lock_guard lock(mu_);
  state_.agent_vsock_connect = agent_.address.path;
  state_.agent_vsock_port = agent::kGuestAgentPort;
  return OkStatus();
}

StatusOr<std::vector<std::string>> Hostd::ServeShares() {
  std::vector<std::string> tags;
  if (config_.shares.empty()) return tags;
  p9::ServerOptions so;
  // Files created in the VM belong to the user running fun-hostd (on a Mac: the user), and
  // setattr of another owner succeeds without effect, as Docker Desktop's shares behave.
  so.owner = p9::OwnerPolicy::kServerUser;
  std::vector<net::GuestShare> table;
  for (const Share& sh : config_.shares) {
    struct stat st {};
    if (::stat(sh.host_path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      int err = ::stat(sh.host_path.c_str(), &st) != 0 ? errno : ENOTDIR;
      return FailedPreconditionError(
          fmt::format("shared folder {}: {}; create it or remove it from \"shares\" in {}",
                      sh.host_path, std::strerror(err), File(InstanceFileKind::kConfig)));
    }
    so.exports.push_back({.name = sh.tag, .dir = sh.host_path, .read_only = sh.read_only});
    table.push_back(
        {.tag = sh.tag, .guest_path = sh.guest_path, .read_only = sh.read_only, .cache = sh.cache});
    tags.push_back(sh.tag);
  }
  FUN_ASSIGN_OR_RETURN(std::string wire, net::EncodeShareTable(table));
  FUN_RETURN_IF_ERROR(WriteFileAtomically(File("shares"), wire, 0644));
  FUN_ASSIGN_OR_RETURN(p9_, p9::Server::Create(std::move(so)));
  std::string sock = File("p9.sock");
  ::unlink(sock.c_str());
  FUN_ASSIGN_OR_RETURN(
      p9_listener_,
      p9::Listener::Create(p9_.get(),
                           SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = sock}));
  if (::chmod(sock.c_str(), 0600) != 0) return ErrnoError(errno, "chmod " + sock);
  p9_thread_ = std::thread([this] {
    Status s = p9_listener_->Run();
    if (!s.ok()) FUN_LOG(Error, "9P server: {}", s.message());
  });
  shares_over_vsock_ = config_.backend == Backend::kQemu && config_.share_transport == "vsock";
  for (const Share& sh : config_.shares) {
    FUN_LOG(Info, "sharing {} at {} in the VM ({}, tag {})", sh.host_path, sh.guest_path,
            sh.read_only ? "read-only" : "read-write", sh.tag);
  }
  return tags;
}

void Hostd::ServeP9Stream(uint32_t port, UniqueFd stream) {
  // The guest's request first: the instance secret and the share. A container in the VM can
  // connect too (vsock is not namespaced) but cannot read the secret.
  std::string got;
  auto received =
      agent::ReadAgentRequest(stream.get(), std::chrono::steady_clock::now() + kP9RequestTimeout,
                              p9_streams_stop_.get(), &got);
  if (!received.ok()) {
    if (received.status().code() != Code::kCancelled) {
      FUN_LOG(Warning, "vsock port {}: {}", port, received.status().message());
    }
    return;
  }
  if (!received->early.empty()) {
    FUN_LOG(Warning, "vsock port {}: 9P bytes before the host's reply", port);
    return;
  }
  const agent::Request* req = &received->request;
  auto refuse = [&](agent::ReplyStatus st, const std::string& why) {
    FUN_LOG(Warning, "vsock port {}: refused a {} stream: {}", port, agent::KindName(req->kind),
            why);
    auto r = agent::EncodeReply({.status = st, .message = why});
    if (r.ok()) (void)WriteAll(stream.get(), *r);
  };
  if (!agent::TokensEqual(req->token, agent_.token)) {
    return refuse(agent::ReplyStatus::kBadToken, "the instance secret does not match");
  }
  if (req->kind != agent::Kind::kP9) {
    return refuse(agent::ReplyStatus::kBadRequest, "only p9 streams are served on this port");
  }
  bool known = false;
  for (const Share& sh : config_.shares) known = known || sh.tag == req->target;
  if (!known) return refuse(agent::ReplyStatus::kBadRequest, "no share is tagged " + req->target);
  auto ok = agent::EncodeReply({.status = agent::ReplyStatus::kOk});
  if (!ok.ok() || !WriteAll(stream.get(), *ok).ok()) return;
  p9_->ServeConnection(stream.release(), "vsock:" + req->target);
}

// The vhost-user vsock device, when the shares or the agent channel use it (QEMU on Linux):
// the guest's streams to the 9P port, and the connect socket to the guest's agent port.
Status Hostd::ServeVsock() {
  agent_over_vsock_ = config_.backend == Backend::kQemu && config_.agent_transport == "vsock";
  if (!shares_over_vsock_ && !agent_over_vsock_) return OkStatus();
#if defined(__linux__)
  vsock::VsockDeviceOptions vo;
  vo.socket_path = File("vsock.sock");
  vo.guest_cid = kGuestCid;
  if (shares_over_vsock_) vo.ports = {kP9VsockPort};
  if (agent_over_vsock_) vo.connect_socket_path = File("vsock.connect");
  // Every forwarded connection is a stream of its own (the harness holds 1,000 at once);
  // fun-guestd's own limit is its --max-connections.
  vo.max_connections = 4096;
  p9_streams_stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
  if (!p9_streams_stop_) return ErrnoError(errno, "eventfd");
  vo.on_connection = [this](uint32_t port, UniqueFd stream) {
    std::lock_guard lock(p9_streams_mu_);
    std::erase_if(p9_streams_, [](P9Stream& s) {
      if (!s.done->load()) return false;
      s.thread.join();
      return true;
    });
    auto done = std::make_shared<std::atomic<bool>>(false);
    p9_streams_.push_back({std::thread([this, port, done, s = std::move(stream)]() mutable {
                             ServeP9Stream(port, std::move(s));
                             done->store(true);
                           }),
                           done});
  };
  vo.log = [](const std::string& m) { FUN_LOG(Info, "vsock device: {}", m); };
  FUN_ASSIGN_OR_RETURN(std::unique_ptr<vsock::VsockDevice> dev,
                       vsock::VsockDevice::Create(std::move(vo)));
  vsock_device_ = std::shared_ptr<vsock::VsockDevice>(std::move(dev));
  vsock_thread_ = std::thread([this] {
    Status s = vsock_device_->Run();
    if (!s.ok()) FUN_LOG(Error, "vsock device: {}", s.message());
  });
  if (shares_over_vsock_) {
    FUN_LOG(Info, "the shares go over vsock (port {}, device on {})", kP9VsockPort,
            File("vsock.sock"));
  }
  if (agent_over_vsock_) {
    FUN_LOG(Info, "the agent channel goes over vsock (guest port {}, connect socket {})",
            agent::kGuestAgentPort, File("vsock.connect"));
  }
  return OkStatus();
#else
  return FailedPreconditionError(
      fmt::format("{} \"vsock\" needs a Linux host (a vhost-user device); set it to \"{}\" in {}",
                  shares_over_vsock_ ? "share_transport" : "agent_transport",
                  shares_over_vsock_ ? "serial" : "tcp", File(InstanceFileKind::kConfig)));
#endif
}

void Hostd::StopShares() {
#if defined(__linux__)
  if (vsock_device_) {
    vsock_device_->Stop();
    if (vsock_thread_.joinable()) vsock_thread_.join();
  }
#endif
  if (!p9_listener_ && !vsock_device_) return;
  if (p9_listener_) {
    p9_listener_->Stop();
    p9_->Shutdown();
    if (p9_thread_.joinable()) p9_thread_.join();
  }
  {
    std::vector<P9Stream> streams;
    {
      std::lock_guard lock(p9_streams_mu_);
      streams.swap(p9_streams_);
    }
    if (p9_streams_stop_) (void)::eventfd_write(p9_streams_stop_.get(), 1);
    for (auto& s : streams) s.thread.join();
  }
  LogShareStats("stopped");
  std::lock_guard lock(shares_mu_);
#if defined(__linux__)
  if (vsock_device_) {
    vsock_device_.reset();
    ::unlink(File("vsock.sock").c_str());
    ::unlink(File("vsock.connect").c_str());
  }
#endif
  p9_listener_.reset();
  p9_.reset();
  ::unlink(File("p9.sock").c_str());
}

void Hostd::LogShareStats(std::string_view when) {
  std::lock_guard lock(shares_mu_);
  if (p9_) {
    auto stats = p9_->stats();
    FUN_LOG(Info, "9P server {}: {} connections, {} requests, {} errors", when,
            stats.connections_total, stats.requests, stats.errors);
  }
#if defined(__linux__)
  if (vsock_device_) {
    auto st = vsock_device_->stats();
    double total_s = static_cast<double>(st.reply_latency_ns) / 1e9;
    FUN_LOG(Info,
            "vsock device {}: {} QEMU connections, {} streams from the guest, {} to it ({} "
            "failed), {} bytes to the guest, {} from it, {} interrupts, {} protocol errors, {} "
            "replies in {:.3f} s of host time (mean {:.1f} us)",
            when, st.frontends, st.streams, st.connects, st.connects_failed, st.bytes_to_guest,
            st.bytes_from_guest, st.notifies, st.protocol_errors, st.replies, total_s,
            st.replies == 0 ? 0.0 : total_s * 1e6 / static_cast<double>(st.replies));
  }
#endif
}

Status Hostd::ServeContainerd() {
  int p[2];
  if (::pipe(p) != 0) return ErrnoError(errno, "pipe");
  relays_stop_read_ = UniqueFd(p[0]);
  relays_stop_write_ = UniqueFd(p[1]);
  for (int fd : p) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  std::string sock = File(InstanceFileKind::kContainerdSock);
  FUN_ASSIGN_OR_RETURN(
      containerd_loop_,
      AcceptLoop::Create(SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = sock},
                         [this](UniqueFd client, std::string) {
                           auto upstream =
                               agent::DialAgent(agent_, {.kind = agent::Kind::kContainerd}, 10s);
                           if (!upstream.ok()) {
                             // Closing the client tells it the runtime is not reachable.
                             FUN_LOG(Warning, "containerd.sock: {}", upstream.status().message());
                             return;
                           }
                           // Ends when the VM does (relays_stop_read_), even if the client
                           // keeps an idle connection open.
                           Status s = net::Splice(client.get(), upstream->get(),
                                                  {.stop_fd = relays_stop_read_.get(),
                                                   .a_name = "containerd.sock client",
                                                   .b_name = "agent"});
                           if (!s.ok()) FUN_LOG(Debug, "containerd.sock relay: {}", s.message());
                         }));
  return OkStatus();
}

namespace {

// The VM's own services, never auto-forwarded: the guest agent, fun-guestd's image server,
// containerd's stream server (linuxkit/containerd-config.toml).
constexpr uint16_t kGuestServicePorts[] = {7070, 5001, 10010};

}  // namespace

std::vector<PublishRequest> Hostd::WantedPorts(cri::Engine* engine) {
  std::vector<PublishRequest> want;
  for (const PortForward& p : config_.ports) {
    want.push_back({.host = {.protocol = p.protocol, .ip = p.host_ip, .port = p.host_port},
                    .target = fmt::format("127.0.0.1:{}", p.guest_port),
                    .owner = "config"});
  }
  if (engine != nullptr) {
    StatusOr<std::vector<cri::PublishedPort>> published = engine->Published();
    if (!published.ok()) {
      // Keep what is published: a slow containerd must not unpublish every container.
      FUN_LOG(Debug, "published ports: {}", published.status().message());
      for (const PublishState& s : publisher_->Table()) {
        if (!s.want.auto_forward && s.want.owner != "config") want.push_back(s.want);
      }
    } else {
      for (const cri::PublishedPort& p : *published) {
        if (p.port.protocol == cri::PortMapping::Protocol::kSctp) continue;
        want.push_back({.host = {.protocol = p.port.protocol == cri::PortMapping::Protocol::kUdp
                                                 ? Protocol::kUdp
                                                 : Protocol::kTcp,
                                 .ip = p.port.host_ip,
                                 .port = static_cast<uint16_t>(p.port.host_port)},
                        .target = p.target,
                        .owner = p.container});
      }
    }
  }
  // Auto-forward: what listens in the VM itself (host-network containers, services), on host
  // loopback at the same port, as Lima does.
  auto ranges = ParsePortRanges(config_.auto_forward);
  if (ranges.ok() && !ranges->empty()) {
    auto in_ranges = [&](uint16_t port) {
      for (auto [lo, hi] : *ranges) {
        if (port >= lo && port <= hi) return true;
      }
      return false;
    };
    StatusOr<std::vector<net::ListenPort>> listening = agent::ListGuestPorts(agent_, 2s);
    if (!listening.ok()) {
      FUN_LOG(Debug, "auto-forward: {}", listening.status().message());
      for (const PublishState& st : publisher_->Table()) {
        if (st.want.auto_forward) want.push_back(st.want);
      }
    } else {
      for (const net::ListenPort& lp : *listening) {
        if (!in_ranges(lp.port) ||
            std::find(std::begin(kGuestServicePorts), std::end(kGuestServicePorts), lp.port) !=
                std::end(kGuestServicePorts)) {
          continue;
        }
        // A wildcard or loopback listener is reached at the VM's loopback; one bound to a
        // particular address, there.
        std::string target;
        if (lp.address == "0.0.0.0" || lp.address == "127.0.0.1" || lp.address == "::") {
          target = fmt::format("127.0.0.1:{}", lp.port);
        } else if (lp.address.find(':') != std::string::npos) {
          target = fmt::format("[{}]:{}", lp.address, lp.port);
        } else {
          target = fmt::format("{}:{}", lp.address, lp.port);
        }
        want.push_back({.host = {.protocol = lp.protocol, .ip = "127.0.0.1", .port = lp.port},
                        .target = std::move(target),
                        .owner = "auto",
                        .auto_forward = true});
      }
    }
  }
  return want;
}

void Hostd::PublishLoop() {
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock,
             [this] { return stop_requested_ || vm_exited_ || state_.phase == Phase::kRunning; });
    if (stop_requested_ || vm_exited_) return;
    publishing_ = true;
  }
  std::unique_ptr<cri::CriClient> cri;
  if (auto c = cri::CriClient::Connect(File(InstanceFileKind::kContainerdSock)); c.ok()) {
    cri = std::move(*c);
  } else {
    FUN_LOG(Warning, "published ports: no CRI client: {}", c.status().message());
  }
  std::unique_ptr<cri::Engine> engine =
      cri ? std::make_unique<cri::Engine>(cri.get(), cri::EngineOptions{}) : nullptr;
  std::string written;
  for (;;) {
    uint64_t round = 0;
    {
      std::lock_guard lock(mu_);
      round = publish_requested_;
    }
    std::vector<PublishState> table = publisher_->Apply(WantedPorts(engine.get()));
    const std::string json = PublishTableJson(table);
    if (json != written) {
      Status s = WriteFileAtomically(File(InstanceFileKind::kPortsJson), json, 0600);
      if (!s.ok()) FUN_LOG(Warning, "ports.json: {}", s.message());
      written = json;
    }
    std::unique_lock lock(mu_);
    publish_done_ = std::max(publish_done_, round);
    cv_.notify_all();
    if (cv_.wait_for(lock, o_.publish_interval,
                     [this] {
                       return stop_requested_ || vm_exited_ || publish_requested_ > publish_done_;
                     }) &&
        (stop_requested_ || vm_exited_)) {
      break;
    }
  }
  publisher_->Clear();
  ::unlink(File(InstanceFileKind::kPortsJson).c_str());
}

Status Hostd::ServeControl() {
  FUN_ASSIGN_OR_RETURN(
      control_loop_,
      AcceptLoop::Create(SocketAddress{.kind = SocketAddress::Kind::kUnix,
                                       .path = File(InstanceFileKind::kHostdSock)},
                         [this](UniqueFd client, std::string) {
                           // Any connection asks for a publish round now; the table is the answer.
                           // Nothing is read from the client: there is nothing to parse.
                           {
                             std::unique_lock lock(mu_);
                             if (publishing_) {
                               const uint64_t round = ++publish_requested_;
                               cv_.notify_all();
                               cv_.wait_for(lock, 10s, [&] {
                                 return publish_done_ >= round || stop_requested_ || vm_exited_;
                               });
                             }
                           }
                           (void)WriteAll(client.get(), PublishTableJson(publisher_->Table()));
                         }));
  return OkStatus();
}

bool Hostd::SharesSettled(const agent::AgentPing& ping) const {
  if (!ping.reports_shares) return true;  // a guest that does not report shares
  for (const Share& want : config_.shares) {
    auto got = std::find_if(ping.shares.begin(), ping.shares.end(),
                            [&](const agent::GuestShareState& g) { return g.tag == want.tag; });
    if (got == ping.shares.end() || got->status == "waiting") return false;
  }
  return true;
}

void Hostd::WatchReady() {
  bool ready = false;
  Clock::MonoTime next_sync{};
  for (;;) {
    {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, ready ? 1s : 100ms,
                       [this] { return stop_requested_ || vm_exited_; })) {
        return;
      }
    }
    if (!ready) {
      // A short timeout while booting: before the guest's eth0 is up, QEMU's port forward
      // accepts the connection and nothing answers; a long wait there could delay the
      // boot's "ready" by up to its length.
      auto ping = agent::PingAgent(agent_, kBootPingTimeout);
      if (!ping.ok() || !ping->containerd_ready) continue;
      // The shares too, so that a `fun run -v` right after the start never bind-mounts an
      // empty mount point: each one mounted or failed (not still waiting), for at most
      // kSharesSettleTimeout after containerd; failures are logged and shown by status.
      if (!SharesSettled(*ping)) {
        auto now = o_.clock->MonotonicNow();
        if (!shares_wait_since_) shares_wait_since_ = now;
        if (now - *shares_wait_since_ < kSharesSettleTimeout) continue;
        FUN_LOG(Warning, "shares not mounted {} s after containerd was ready; going on",
                std::chrono::duration_cast<std::chrono::seconds>(kSharesSettleTimeout).count());
      }
      for (const auto& s : ping->shares) {
        if (s.status == "failed") FUN_LOG(Error, "share {} in the VM: {}", s.path, s.error);
      }
      ready = true;
      std::lock_guard lock(mu_);
      // A stop requested while the ping was under way: "stopping" must not become "running".
      if (stop_requested_ || vm_exited_) return;
      state_.phase = Phase::kRunning;
      cv_.notify_all();  // PublishLoop waits for this
      state_.ready_at_ms = WallMs(*o_.clock);
      state_.guest_uptime_at_ready_s = ping->uptime_s;
      SaveState();
      FUN_LOG(Info, "containerd is ready {:.2f} s after start (guest uptime {:.2f} s)",
              static_cast<double>(state_.ready_at_ms - state_.started_at_ms) / 1000.0,
              ping->uptime_s);
    }
    // Keep the guest clock in step with the host: at once, then every interval.
    auto now = o_.clock->MonotonicNow();
    if (next_sync <= now) next_sync = now + SyncGuestClock();
  }
}

// Measures the guest clock's offset with a ping and has the guest step its clock by it. A
// relative step lands right however late a stalled guest applies it (an absolute time did
// not: a guest that stalled 21 s under memory pressure set a time 21 s old). When the round
// trip is too long to measure well, it tries again soon. Returns the wait until the next try.
Clock::Duration Hostd::SyncGuestClock() {
  // A warning: a VM clock left to drift breaks TLS and make in containers (doctor FUN0019).
  auto ping = agent::PingAgent(agent_, 2s);
  if (!ping.ok()) {
    FUN_LOG(Warning, "time sync: {}", ping.status().message());
    return o_.time_sync_interval;
  }
  if (ping->guest_time_unix_ns == 0) {
    FUN_LOG(Warning, "time sync: the guest agent does not report its clock (an older image)");
    return o_.time_sync_interval;
  }
  const agent::ClockOffset d = agent::MeasureClockOffset(*ping);
  if (d.uncertainty_ns > kTimeSyncMaxUncertainty.count()) {
    FUN_LOG(Info, "time sync: the ping took {} ms: measuring again in {} s",
            2 * d.uncertainty_ns / 1'000'000,
            std::chrono::duration_cast<std::chrono::seconds>(kTimeSyncRetry).count());
    return kTimeSyncRetry;
  }
  if (d.excess_ns <= kTimeSyncTolerance.count()) return o_.time_sync_interval;
  auto said = agent::StepGuestClock(agent_, -d.offset_ns, 2s);
  if (!said.ok()) {
    FUN_LOG(Warning, "time sync: {}", said.status().message());
  } else {
    FUN_LOG(Info, "time sync: the VM's clock was {:+.3f} s off (+/- {} ms): {}",
            static_cast<double>(d.offset_ns) / 1e9, d.uncertainty_ns / 1'000'000, *said);
  }
  return o_.time_sync_interval;
}

void Hostd::StopVm() {
  // Each graceful step waits for the VM to end, or for a forced stop (a second signal) that
  // skips the steps left.
  enum class Woke { kExited, kForced, kTimeout };
  auto wait = [this](std::chrono::milliseconds d) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, d, [this] { return vm_exited_ || force_stop_; });
    return vm_exited_ ? Woke::kExited : force_stop_ ? Woke::kForced : Woke::kTimeout;
  };
  auto budget = o_.stop_timeout;
  Woke woke = wait(0ms);
  if (woke == Woke::kTimeout) {
    FUN_LOG(Info, "stopping: asking the guest agent to shut down");
    auto r = agent::CallAgent(agent_, {.kind = agent::Kind::kShutdown}, 5s);
    if (r.ok()) {
      woke = wait(budget * 6 / 10);
    } else {
      // Nobody took the request (the VM's network down, the agent gone): waiting for a
      // shutdown that was never asked for only delays the power button.
      FUN_LOG(Info, "agent shutdown: {}", r.status().message());
    }
  }
  if (woke == Woke::kTimeout && config_.backend == Backend::kHyperkit) {
    // hyperkit turns SIGTERM into the ACPI power button (the guest's acpid powers off).
    FUN_LOG(Info, "stopping: ACPI power button (SIGTERM to hyperkit)");
    Status s = vm_->Signal(SIGTERM);
    if (!s.ok()) FUN_LOG(Info, "SIGTERM to hyperkit: {}", s.message());
    woke = wait(budget * 3 / 10);
  } else if (woke == Woke::kTimeout) {
    FUN_LOG(Info, "stopping: ACPI power button");
    auto qmp = QmpClient::Connect(File("qmp.sock"), 2s);
    if (qmp.ok()) {
      auto p = (*qmp)->Execute("system_powerdown");
      if (!p.ok()) FUN_LOG(Info, "system_powerdown: {}", p.status().message());
    } else {
      FUN_LOG(Info, "QMP: {}", qmp.status().message());
    }
    woke = wait(budget * 3 / 10);
  }
  if (woke == Woke::kExited) return;
  if (config_.backend == Backend::kHyperkit) {
    // Another SIGTERM would only press the power button again.
    FUN_LOG(Info, "stopping: SIGKILL to hyperkit");
    Status s = vm_->Signal(SIGKILL);
    if (!s.ok()) FUN_LOG(Warning, "killing hyperkit: {}", s.message());
    return;
  }
  FUN_LOG(Info, "stopping: SIGTERM, then SIGKILL");
  Status s = vm_->Terminate(o_.kill_grace);
  if (!s.ok()) FUN_LOG(Warning, "terminating qemu: {}", s.message());
}

void Hostd::RequestStop(bool force) {
  std::lock_guard lock(mu_);
  if (!stop_requested_) {
    stop_requested_ = true;
    state_.phase = Phase::kStopping;
    SaveState();
  }
  force_stop_ = force_stop_ || force;
  cv_.notify_all();
}

void Hostd::Finish(const ProcessResult* result) {
  std::lock_guard lock(mu_);
  LastExit e;
  e.at_ms = WallMs(*o_.clock);
  if (result != nullptr) {
    e.exit_code = result->exit_code;
    e.signal = result->term_signal;
  }
  if (stop_requested_) {
    e.reason = "stopped on request";
  } else if (result == nullptr) {
    e.reason = "the hypervisor did not start";
    e.clean = false;
  } else if (result->ok()) {
    e.reason = DescribeGuestEnd(TailFile(File(InstanceFileKind::kConsoleLog), 80));
  } else if (config_.backend == Backend::kHyperkit && result->term_signal == 0) {
    // hyperkit's exit status says how the guest ended (a reset, a triple fault, its own error).
    e.reason = DescribeHyperkitExit(result->exit_code);
    e.clean = false;
  } else {
    e.reason = fmt::format("{} {}", config_.backend == Backend::kHyperkit ? "hyperkit" : "qemu",
                           result->Describe());
    e.clean = false;
  }
  state_.last_exit = e;
  state_.phase = state_.error.empty() ? Phase::kStopped : Phase::kFailed;
  // The final state first, then the pid files: a reader that finds no live hostd.pid must
  // already find the end recorded (else it sees "running" without a hostd and says "crashed";
  // the harness caught that window).
  SaveState();
  for (const std::string& f : {File(InstanceFileKind::kVmPid), File(InstanceFileKind::kHostdPid),
                               File("qmp.sock"), File("hyperkit.pid"), File("vsock/connect")}) {
    ::unlink(f.c_str());
  }
  FUN_LOG(Info, "instance {} ended: {}", o_.instance, e.reason);
}

Status Hostd::Run() {
  Status prep = Prepare();
  if (!prep.ok()) return prep;
  FUN_RETURN_IF_ERROR(WritePidFile(File(InstanceFileKind::kHostdPid), ::getpid()));
  {
    std::lock_guard lock(mu_);
    state_.phase = stop_requested_ ? Phase::kStopping : Phase::kStarting;
    state_.error.clear();
    SaveState();
  }
  Status started = StartVm();
  if (!started.ok()) {
    {
      std::lock_guard lock(mu_);
      state_.error = started.message();
    }
    StopShares();
    Finish(nullptr);
    return started;
  }
  {
    std::lock_guard lock(mu_);
    SaveState();
  }

  std::thread waiter([this] {
    auto r = vm_->Wait(std::nullopt);
    std::lock_guard lock(mu_);
    vm_exited_ = true;
    if (r.ok()) vm_result_ = *r;
    cv_.notify_all();
  });
  Status serving = ServeContainerd();
  if (!serving.ok()) {
    FUN_LOG(Error, "{}", serving.message());
    RequestStop(true);
  }
  std::thread server([this] {
    if (!containerd_loop_) return;
    Status s = containerd_loop_->Run();
    if (!s.ok()) FUN_LOG(Error, "{}", s.message());
  });
  std::thread watcher([this] { WatchReady(); });
  if (Status s = ServeControl(); !s.ok()) FUN_LOG(Warning, "hostd.sock: {}", s.message());
  std::thread control([this] {
    if (!control_loop_) return;
    Status s = control_loop_->Run();
    if (!s.ok()) FUN_LOG(Warning, "hostd.sock: {}", s.message());
  });
  std::thread publish([this] { PublishLoop(); });

  bool exited = false;
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return stop_requested_ || vm_exited_; });
    exited = vm_exited_;
  }
  if (!exited) StopVm();
  waiter.join();
  watcher.join();
  publish.join();  // closes every published port
  if (control_loop_) control_loop_->Stop();
  control.join();
  control_loop_.reset();
  // The VM is gone: end the relays it carried, then stop serving.
  if (relays_stop_write_.valid()) (void)!::write(relays_stop_write_.get(), "x", 1);
  if (containerd_loop_) containerd_loop_->Stop();
  server.join();
  containerd_loop_.reset();  // joins relays (they end with the VM) and removes the socket
  StopShares();              // only now: the 9P server must outlive the VM
  Finish(vm_result_ ? &*vm_result_ : nullptr);
  return OkStatus();
}

}  // namespace fun::vm

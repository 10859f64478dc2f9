// The vsock device against a front-end played by the test: the vhost-user messages QEMU sends
// (with the same fds: a memfd of guest memory, eventfds) and the guest driver's side of the
// rings (Linux 6.1's layout: an rx buffer is a 44-byte header descriptor and a 4 KiB one).
// The device against the real QEMU and guest kernel: the harness (shares over vsock).
#include "lib/vsock/device.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lib/base/socket.h"
#include "lib/vhost/message.h"
#include "lib/vsock/packet.h"

namespace fun::vsock {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

constexpr uint64_t kGuestPhys = 0x40000000;     // where the guest sees its memory
constexpr uint64_t kUserAddr = 0x7f1200000000;  // where "QEMU" says it mapped it
constexpr size_t kMemSize = 8 << 20;
constexpr uint32_t kNum = 64;
constexpr uint64_t kGuestCid = 3;
constexpr uint32_t kPort = 5640;

void Put16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
void Put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
void Put64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
uint16_t Get16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
uint32_t Get32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// One split ring laid out in the guest memory at `base` (guest-physical offset from
// kGuestPhys): descriptors, then the available ring, then (4 KiB on) the used ring.
struct TestRing {
  uint64_t base = 0;
  uint64_t desc() const { return base; }
  uint64_t avail() const { return base + 16 * kNum; }
  uint64_t used() const { return base + 0x1000; }
  uint16_t avail_idx = 0;
  uint16_t used_seen = 0;
  uint16_t next_desc = 0;
};

class FakeFrontend {
 public:
  explicit FakeFrontend(const std::string& socket) {
    memfd_ = UniqueFd(::memfd_create("guest-ram", MFD_CLOEXEC));
    EXPECT_TRUE(memfd_.valid());
    EXPECT_EQ(::ftruncate(memfd_.get(), kMemSize), 0);
    void* p = ::mmap(nullptr, kMemSize, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_.get(), 0);
    EXPECT_NE(p, MAP_FAILED);
    mem_ = static_cast<uint8_t*>(p);
    for (auto& fd : kick_) fd = UniqueFd(::eventfd(0, EFD_CLOEXEC));
    for (auto& fd : call_) fd = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    rings_[0].base = 0x0000;
    rings_[1].base = 0x4000;
    auto c = Connect(SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = socket});
    EXPECT_TRUE(c.ok()) << c.status();
    if (c.ok()) sock_ = std::move(*c);
  }
  ~FakeFrontend() { ::munmap(mem_, kMemSize); }

  uint8_t* At(uint64_t guest_off) { return mem_ + guest_off; }

  // Sends one message; fds ride with it.
  void Send(vhost::Request req, const std::string& payload, std::vector<int> fds = {},
            uint32_t extra_flags = 0) {
    std::string bytes =
        vhost::EncodeHeader({static_cast<uint32_t>(req), vhost::kVersion | extra_flags,
                             static_cast<uint32_t>(payload.size())});
    bytes += payload;
    iovec iov{bytes.data(), bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)] = {};
    if (!fds.empty()) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ASSERT_EQ(::sendmsg(sock_.get(), &msg, MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
  }
  // Reads one reply: its payload ("" when the device closed the socket).
  std::string ReadReply(uint32_t* request = nullptr) {
    uint8_t head[vhost::kHeaderSize];
    if (!ReadExactly(head, sizeof(head))) return "";
    auto h = vhost::DecodeHeader(head);
    EXPECT_TRUE(h.ok());
    if (!h.ok()) return "";
    EXPECT_TRUE(h->flags & vhost::kFlagReply);
    if (request) *request = h->request;
    std::string payload(h->size, '\0');
    if (!ReadExactly(reinterpret_cast<uint8_t*>(payload.data()), payload.size())) return "";
    return payload;
  }
  bool ReadExactly(uint8_t* p, size_t n) {
    while (n > 0) {
      pollfd pfd{sock_.get(), POLLIN, 0};
      if (::poll(&pfd, 1, 5000) != 1) return false;
      ssize_t r = ::read(sock_.get(), p, n);
      if (r <= 0) return false;
      p += r;
      n -= static_cast<size_t>(r);
    }
    return true;
  }
  // Whether the device closed the vhost-user socket (within 5 s).
  bool Closed() {
    pollfd pfd{sock_.get(), POLLIN, 0};
    if (::poll(&pfd, 1, 5000) != 1) return false;
    char c;
    return ::read(sock_.get(), &c, 1) == 0;
  }
  static std::string U64(uint64_t v) { return std::string(reinterpret_cast<char*>(&v), 8); }
  static std::string State(uint32_t index, uint32_t num) {
    std::string s(8, '\0');
    Put32(reinterpret_cast<uint8_t*>(s.data()), index);
    Put32(reinterpret_cast<uint8_t*>(s.data()) + 4, num);
    return s;
  }
  // SET_MEM_TABLE's payload: the one region of guest memory (the memfd, from its start).
  static std::string MemTable() {
    std::string table(8 + 32, '\0');
    auto* t = reinterpret_cast<uint8_t*>(table.data());
    Put32(t, 1);
    Put64(t + 8, kGuestPhys);
    Put64(t + 16, kMemSize);
    Put64(t + 24, kUserAddr);
    Put64(t + 32, 0);
    return table;
  }
  uint64_t AskU64(vhost::Request req) {
    Send(req, "");
    std::string r = ReadReply();
    uint64_t v = 0;
    if (r.size() == 8) std::memcpy(&v, r.data(), 8);
    return v;
  }

  // What QEMU does when the guest driver starts the device.
  void SetUp(bool reply_ack = true) {
    uint64_t features = AskU64(vhost::Request::kGetFeatures);
    Send(vhost::Request::kSetOwner, "");
    uint64_t proto = AskU64(vhost::Request::kGetProtocolFeatures);
    proto_ = proto & (vhost::kProtocolConfig | (reply_ack ? vhost::kProtocolReplyAck : 0));
    Send(vhost::Request::kSetProtocolFeatures, U64(proto_));
    Send(vhost::Request::kSetFeatures,
         U64(features & (vhost::kFeatureVersion1 | vhost::kFeatureProtocolFeatures)));
    SendAcked(vhost::Request::kSetMemTable, MemTable(), {memfd_.get()});
    for (uint32_t q = 0; q < 2; ++q) {
      SendAcked(vhost::Request::kSetVringNum, State(q, kNum));
      SendAcked(vhost::Request::kSetVringBase, State(q, 0));
      std::string addr(40, '\0');
      auto* a = reinterpret_cast<uint8_t*>(addr.data());
      Put32(a, q);
      Put64(a + 8, kUserAddr + rings_[q].desc());
      Put64(a + 16, kUserAddr + rings_[q].used());
      Put64(a + 24, kUserAddr + rings_[q].avail());
      SendAcked(vhost::Request::kSetVringAddr, addr);
      SendAcked(vhost::Request::kSetVringKick, U64(q), {kick_[q].get()});
      SendAcked(vhost::Request::kSetVringCall, U64(q), {call_[q].get()});
      SendAcked(vhost::Request::kSetVringEnable, State(q, 1));
    }
  }
  // With REPLY_ACK negotiated, QEMU asks for an ack and waits for it: so does the test, which
  // also orders the messages before the rings are used.
  void SendAcked(vhost::Request req, const std::string& payload, std::vector<int> fds = {}) {
    bool ack = proto_ & vhost::kProtocolReplyAck;
    Send(req, payload, fds, ack ? vhost::kFlagNeedReply : 0);
    if (ack) {
      EXPECT_EQ(ReadReply(), U64(0)) << vhost::RequestName(static_cast<uint32_t>(req));
    }
  }

  // The driver's side: make `n` rx buffers available (a 44-byte header and a 4 KiB payload
  // descriptor each, as Linux 6.1 posts them).
  void PostRx(int n) {
    TestRing& r = rings_[0];
    for (int i = 0; i < n; ++i) {
      uint16_t d = static_cast<uint16_t>(r.next_desc % kNum);
      uint16_t d2 = static_cast<uint16_t>((d + 1) % kNum);
      r.next_desc = static_cast<uint16_t>(r.next_desc + 2);
      uint64_t buf = 0x100000 + uint64_t{d} * 0x2000;
      WriteDesc(r, d, buf, kHeaderSize, 1 | 2, d2);  // NEXT | WRITE
      WriteDesc(r, d2, buf + 64, 4096, 2, 0);        // WRITE
      rx_buf_[d] = buf;
      Put16(At(r.avail() + 4 + 2 * (r.avail_idx % kNum)), d);
      r.avail_idx++;
    }
    std::atomic_thread_fence(std::memory_order_release);
    Put16(At(r.avail() + 2), r.avail_idx);
    Kick(0);
  }
  // The driver sends one packet (header and payload in two descriptors).
  void SendTx(const Header& h, const std::string& payload = "") {
    TestRing& r = rings_[1];
    // Descriptor slots are reused in turn: wait until the device took the older packets.
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (static_cast<uint16_t>(r.avail_idx - TxUsed()) >= kNum / 2 - 1 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
    uint16_t d = static_cast<uint16_t>(r.next_desc % kNum);
    uint16_t d2 = static_cast<uint16_t>((d + 1) % kNum);
    r.next_desc = static_cast<uint16_t>(r.next_desc + 2);
    uint64_t buf = 0x400000 + uint64_t{d} * 0x10000;
    Header hh = h;
    hh.len = static_cast<uint32_t>(payload.size());
    EncodeHeader(hh, At(buf));
    std::memcpy(At(buf + 64), payload.data(), payload.size());
    if (payload.empty()) {
      WriteDesc(r, d, buf, kHeaderSize, 0, 0);
    } else {
      WriteDesc(r, d, buf, kHeaderSize, 1, d2);
      WriteDesc(r, d2, buf + 64, static_cast<uint32_t>(payload.size()), 0, 0);
    }
    Put16(At(r.avail() + 4 + 2 * (r.avail_idx % kNum)), d);
    r.avail_idx++;
    std::atomic_thread_fence(std::memory_order_release);
    Put16(At(r.avail() + 2), r.avail_idx);
    Kick(1);
  }
  void WriteDesc(TestRing& r, uint16_t i, uint64_t gpa_off, uint32_t len, uint16_t flags,
                 uint16_t next) {
    uint8_t* d = At(r.desc() + 16 * i);
    Put64(d, kGuestPhys + gpa_off);
    Put32(d + 8, len);
    Put16(d + 12, flags);
    Put16(d + 14, next);
  }
  void Kick(int q) { ASSERT_EQ(::eventfd_write(kick_[q].get(), 1), 0); }
  // Breaks the tx ring: the available index jumps past the ring's size.
  void BreakTx() {
    Put16(At(rings_[1].avail() + 2), static_cast<uint16_t>(rings_[1].avail_idx + kNum + 5));
    Kick(1);
  }

  struct Packet {
    Header h;
    std::string payload;
  };
  // The packets the device put in the rx ring since the last call.
  std::vector<Packet> TakeRx() {
    std::vector<Packet> out;
    TestRing& r = rings_[0];
    uint16_t used = Get16(At(r.used() + 2));
    std::atomic_thread_fence(std::memory_order_acquire);
    while (r.used_seen != used) {
      const uint8_t* e = At(r.used() + 4 + 8 * (r.used_seen % kNum));
      uint16_t id = static_cast<uint16_t>(Get32(e));
      uint32_t len = Get32(e + 4);
      uint64_t buf = rx_buf_[id];
      Packet p;
      auto h = DecodeHeader({At(buf), kHeaderSize});
      EXPECT_TRUE(h.ok());
      if (h.ok()) p.h = *h;
      EXPECT_GE(len, kHeaderSize);
      EXPECT_EQ(len - kHeaderSize, p.h.len);
      p.payload.assign(reinterpret_cast<char*>(At(buf + 64)), p.h.len);
      out.push_back(std::move(p));
      r.used_seen++;
    }
    return out;
  }
  // Waits until the rx ring has at least `n` new packets (5 s at most), then takes them.
  std::vector<Packet> WaitRx(size_t n) {
    std::vector<Packet> all;
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (all.size() < n && std::chrono::steady_clock::now() < deadline) {
      pollfd pfd{call_[0].get(), POLLIN, 0};
      (void)::poll(&pfd, 1, 50);
      eventfd_t v;
      (void)::eventfd_read(call_[0].get(), &v);
      for (auto& p : TakeRx()) all.push_back(std::move(p));
    }
    return all;
  }
  uint16_t TxUsed() { return Get16(At(rings_[1].used() + 2)); }

  Header FromGuest(Op op, uint32_t guest_port, uint32_t host_port, uint32_t buf_alloc = 1 << 16,
                   uint32_t fwd_cnt = 0) {
    Header h;
    h.src_cid = kGuestCid;
    h.dst_cid = kHostCid;
    h.src_port = guest_port;
    h.dst_port = host_port;
    h.type = kTypeStream;
    h.op = static_cast<uint16_t>(op);
    h.buf_alloc = buf_alloc;
    h.fwd_cnt = fwd_cnt;
    return h;
  }

 private:
  UniqueFd memfd_;
  uint8_t* mem_ = nullptr;
  UniqueFd sock_;
  UniqueFd kick_[2];
  UniqueFd call_[2];
  TestRing rings_[2];
  uint64_t rx_buf_[kNum] = {};
  uint64_t proto_ = 0;
};

class VsockDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fun-vsock-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    VsockDeviceOptions o;
    o.socket_path = (dir_ / "vsock.sock").string();
    o.guest_cid = kGuestCid;
    o.ports = {kPort};
    o.connect_socket_path = ConnectSocket();
    o.on_connection = [this](uint32_t port, UniqueFd fd) {
      std::lock_guard<std::mutex> l(mu_);
      accepted_.push_back({port, std::move(fd)});
    };
    o.log = [this](const std::string& m) {
      std::lock_guard<std::mutex> l(mu_);
      logs_.push_back(m);
    };
    auto d = VsockDevice::Create(std::move(o));
    ASSERT_TRUE(d.ok()) << d.status();
    dev_ = std::move(*d);
    thread_ = std::thread([this] { run_status_ = dev_->Run(); });
  }
  void TearDown() override {
    if (dev_) dev_->Stop();
    if (thread_.joinable()) thread_.join();
    EXPECT_TRUE(run_status_.ok()) << run_status_;
    fs::remove_all(dir_);
  }
  std::string Socket() const { return (dir_ / "vsock.sock").string(); }
  std::string ConnectSocket() const { return (dir_ / "vsock.connect").string(); }
  // A client of the connect socket that wrote `line` and then `after`.
  UniqueFd Dial(const std::string& line, const std::string& after = "") {
    auto c = Connect(SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = ConnectSocket()});
    EXPECT_TRUE(c.ok()) << c.status();
    if (!c.ok()) return UniqueFd();
    EXPECT_TRUE(WriteAll(c->get(), line + after).ok());
    return std::move(*c);
  }
  // True when the device closed `fd` within 5 s: EOF, or ECONNRESET when it left bytes of
  // ours unread.
  static bool ClosedByDevice(int fd) {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, 5000) != 1) return false;
    char c;
    ssize_t r = ::read(fd, &c, 1);
    return r == 0 || (r < 0 && errno == ECONNRESET);
  }
  // The stream handed to on_connection (waits up to 5 s).
  UniqueFd TakeStream(uint32_t* port = nullptr, std::chrono::milliseconds wait = 5000ms) {
    auto deadline = std::chrono::steady_clock::now() + wait;
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::lock_guard<std::mutex> l(mu_);
        if (!accepted_.empty()) {
          if (port) *port = accepted_.front().first;
          UniqueFd fd = std::move(accepted_.front().second);
          accepted_.erase(accepted_.begin());
          return fd;
        }
      }
      std::this_thread::sleep_for(5ms);
    }
    return UniqueFd();
  }
  std::string Logs() {
    std::lock_guard<std::mutex> l(mu_);
    std::string s;
    for (const auto& m : logs_) s += m + "\n";
    return s;
  }

  fs::path dir_;
  std::unique_ptr<VsockDevice> dev_;
  std::thread thread_;
  Status run_status_;
  std::mutex mu_;
  std::vector<std::pair<uint32_t, UniqueFd>> accepted_;
  std::vector<std::string> logs_;
};

std::string ReadSome(int fd, size_t n) {
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (out.size() < n && std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, 100) != 1) continue;
    char buf[65536];
    ssize_t r = ::read(fd, buf, std::min(sizeof(buf), n - out.size()));
    if (r <= 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

TEST_F(VsockDeviceTest, OffersVersion1AndConfigAndAnswersTheGuestCid) {
  FakeFrontend fe(Socket());
  uint64_t features = fe.AskU64(vhost::Request::kGetFeatures);
  EXPECT_TRUE(features & vhost::kFeatureVersion1);
  EXPECT_TRUE(features & vhost::kFeatureProtocolFeatures);
  uint64_t proto = fe.AskU64(vhost::Request::kGetProtocolFeatures);
  EXPECT_TRUE(proto & vhost::kProtocolConfig);
  EXPECT_TRUE(proto & vhost::kProtocolReplyAck);
  // GET_CONFIG: offset, size, flags, then as many bytes (struct virtio_vsock_config).
  std::string req(12 + 8, '\0');
  Put32(reinterpret_cast<uint8_t*>(req.data()) + 4, 8);
  fe.Send(vhost::Request::kGetConfig, req);
  std::string reply = fe.ReadReply();
  ASSERT_EQ(reply.size(), 20u);
  uint64_t cid;
  std::memcpy(&cid, reply.data() + 12, 8);
  EXPECT_EQ(cid, kGuestCid);
  // The upper half alone (offset 4): zeros for a CID below 2^32.
  Put32(reinterpret_cast<uint8_t*>(req.data()), 4);
  Put32(reinterpret_cast<uint8_t*>(req.data()) + 4, 4);
  req.resize(16);
  fe.Send(vhost::Request::kGetConfig, req);
  reply = fe.ReadReply();
  ASSERT_EQ(reply.size(), 16u);
  EXPECT_EQ(Get32(reinterpret_cast<const uint8_t*>(reply.data()) + 12), 0u);
}

TEST_F(VsockDeviceTest, GuestConnectsAndBytesFlowBothWays) {
  FakeFrontend fe(Socket());
  fe.SetUp();
  fe.PostRx(16);
  fe.SendTx(fe.FromGuest(Op::kRequest, 40000, kPort));
  auto rx = fe.WaitRx(1);
  ASSERT_EQ(rx.size(), 1u) << Logs();
  EXPECT_EQ(rx[0].h.op, static_cast<uint16_t>(Op::kResponse));
  EXPECT_EQ(rx[0].h.src_cid, kHostCid);
  EXPECT_EQ(rx[0].h.dst_cid, kGuestCid);
  EXPECT_EQ(rx[0].h.src_port, kPort);
  EXPECT_EQ(rx[0].h.dst_port, 40000u);
  uint32_t port = 0;
  UniqueFd stream = TakeStream(&port);
  ASSERT_TRUE(stream.valid());
  EXPECT_EQ(port, kPort);

  fe.SendTx(fe.FromGuest(Op::kRw, 40000, kPort), "ping from the guest");
  EXPECT_EQ(ReadSome(stream.get(), 19), "ping from the guest");

  ASSERT_TRUE(WriteAll(stream.get(), "pong from the host").ok());
  rx = fe.WaitRx(1);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].h.op, static_cast<uint16_t>(Op::kRw));
  EXPECT_EQ(rx[0].payload, "pong from the host");
  EXPECT_EQ(rx[0].h.dst_port, 40000u);

  // The host side closes: the guest is told nothing more comes either way, and the connection
  // is gone (a RST after the SHUTDOWN).
  stream.reset();
  rx = fe.WaitRx(2);
  ASSERT_EQ(rx.size(), 2u);
  EXPECT_EQ(rx[0].h.op, static_cast<uint16_t>(Op::kShutdown));
  EXPECT_EQ(rx[0].h.flags, kShutdownRcv | kShutdownSend);
  EXPECT_EQ(rx[1].h.op, static_cast<uint16_t>(Op::kRst));
  VsockDeviceStats st = dev_->stats();
  EXPECT_EQ(st.frontends, 1u);
  EXPECT_EQ(st.streams, 1u);
  EXPECT_EQ(st.bytes_from_guest, 19u);
  EXPECT_EQ(st.bytes_to_guest, 18u);
  EXPECT_GE(st.notifies, 3u);
}

TEST_F(VsockDeviceTest, ReplyLatencyRunsFromTheGuestsLatestBytesToTheHostsAnswer) {
  FakeFrontend fe(Socket());
  fe.SetUp();
  fe.PostRx(16);
  fe.SendTx(fe.FromGuest(Op::kRequest, 40000, kPort));
  ASSERT_EQ(fe.WaitRx(1).size(), 1u) << Logs();
  UniqueFd stream = TakeStream(nullptr);
  ASSERT_TRUE(stream.valid());

  // Bytes the host sends before the guest said anything answer nothing.
  ASSERT_TRUE(WriteAll(stream.get(), "hello").ok());
  ASSERT_EQ(fe.WaitRx(1).size(), 1u);
  EXPECT_EQ(dev_->stats().replies, 0u);

  // A request in two packets: the clock starts again at the second (not checked from above:
  // no timing bounds in unit tests).
  fe.SendTx(fe.FromGuest(Op::kRw, 40000, kPort), "req");
  EXPECT_EQ(ReadSome(stream.get(), 3), "req");
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  fe.SendTx(fe.FromGuest(Op::kRw, 40000, kPort), "uest");
  EXPECT_EQ(ReadSome(stream.get(), 4), "uest");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(WriteAll(stream.get(), "reply").ok());
  ASSERT_EQ(fe.WaitRx(1).size(), 1u);
  VsockDeviceStats st = dev_->stats();
  EXPECT_EQ(st.replies, 1u);
  EXPECT_GE(st.reply_latency_ns, 20'000'000u);

  // More from the host without a new request is not a second reply.
  ASSERT_TRUE(WriteAll(stream.get(), "more").ok());
  ASSERT_EQ(fe.WaitRx(1).size(), 1u);
  EXPECT_EQ(dev_->stats().replies, 1u);
}

// --- the connect socket: the host connecting to ports the guest listens on ---

constexpr uint32_t kAgentPort = 7070;

TEST_F(VsockDeviceTest, AConnectSocketClientReachesAGuestPortAndBytesFlowBothWays) {
  FakeFrontend fe(Socket());
  fe.SetUp();
  fe.PostRx(16);
  // The request right behind the line, as agent_client writes them: it waits for the guest.
  UniqueFd c = Dial(ConnectLine(kGuestCid, kAgentPort), "request");
  auto rx = fe.WaitRx(1);
  ASSERT_EQ(rx.size(), 1u) << Logs();
  EXPECT_EQ(rx[0].h.op, static_cast<uint16_t>(Op::kRequest));
  EXPECT_EQ(rx[0].h.src_cid, kHostCid);
  EXPECT_EQ(rx[0].h.dst_cid, kGuestCid);
  EXPECT_EQ(rx[0].h.dst_port, kAgentPort);
  const uint32_t host_port = rx[0].h.src_port;
  EXPECT_EQ(host_port, Mux::kFirstConnectPort);

  fe.SendTx(fe.FromGuest(Op::kResponse, kAgentPort, host_port));
  rx = fe.WaitRx(1);
  ASSERT_EQ(rx.size(), 1u) << Logs();
  EXPECT_EQ(rx[0].h.op, static_cast<uint16_t>(Op::kRw));
  EXPECT_EQ(rx[0].payload, "request");
  EXPECT_EQ(rx[0].h.src_port, host_port);
  fe.SendTx(fe.FromGuest(Op::kRw, kAgentPort, host_port), "reply from the guest");
  EXPECT_EQ(ReadSome(c.get(), 20), "reply from the guest");
  // The host's next bytes after the guest's: not a timed reply on a stream the host opened.
  ASSERT_TRUE(WriteAll(c.get(), "next").ok());
  rx = fe.WaitRx(1);
  ASSERT_EQ(rx.size(), 1u) << Logs();
  EXPECT_EQ(rx[0].payload, "next");

  // The client closes: the guest is told, and the connection ends (SHUTDOWN, then RST).
  c.reset();
  rx = fe.WaitRx(2);
  ASSERT_EQ(rx.size(), 2u) << Logs();
  EXPECT_EQ(rx[0].h.op, static_cast<uint16_t>(Op::kShutdown));
  EXPECT_EQ(rx[1].h.op, static_cast<uint16_t>(Op::kRst));
  VsockDeviceStats st = dev_->stats();
  EXPECT_EQ(st.connects, 1u);
  EXPECT_EQ(st.connects_failed, 0u);
  EXPECT_EQ(st.streams, 0u);  // on_connection is for the guest's connections
  EXPECT_EQ(st.replies, 0u);  // the guest answers here: not timed
  EXPECT_FALSE(TakeStream(nullptr, 100ms).valid());
}

TEST_F(VsockDeviceTest, AConnectTheGuestRefusesClosesTheClient) {
  FakeFrontend fe(Socket());
  fe.SetUp();
  fe.PostRx(16);
  UniqueFd c = Dial(ConnectLine(kGuestCid, 9999));
  auto rx = fe.WaitRx(1);
  ASSERT_EQ(rx.size(), 1u) << Logs();
  fe.SendTx(fe.FromGuest(Op::kRst, 9999, rx[0].h.src_port));
  EXPECT_TRUE(ClosedByDevice(c.get()));
  EXPECT_EQ(dev_->stats().connects_failed, 1u);
  EXPECT_THAT(Logs(), HasSubstr("the guest refused a connection to port 9999"));
}

TEST_F(VsockDeviceTest, AWrongLineAWrongCidOrNoGuestClosesTheClientSayingWhy) {
  // No front-end yet: nobody to connect to.
  UniqueFd early = Dial(ConnectLine(kGuestCid, kAgentPort));
  EXPECT_TRUE(ClosedByDevice(early.get()));
  FakeFrontend fe(Socket());
  fe.SetUp();
  fe.PostRx(16);
  UniqueFd bad = Dial("hello, is that the guest?\n");
  EXPECT_TRUE(ClosedByDevice(bad.get()));
  UniqueFd other = Dial(ConnectLine(kGuestCid + 1, kAgentPort));
  EXPECT_TRUE(ClosedByDevice(other.get()));
  EXPECT_TRUE(fe.WaitRx(1).empty());  // nothing reached the guest
  EXPECT_EQ(dev_->stats().connects_failed, 3u);
  const std::string logs = Logs();
  EXPECT_THAT(logs, HasSubstr("no guest to connect to port 7070"));
  EXPECT_THAT(logs, HasSubstr("%08x.%08x"));
  EXPECT_THAT(logs, HasSubstr(fmt::format("CID {} asked for", kGuestCid + 1)));
}

TEST_F(VsockDeviceTest, AClientThatHangsUpBeforeTheGuestAnswersResetsTheConnect) {
  FakeFrontend fe(Socket());
  fe.SetUp();
  fe.PostRx(16);
  UniqueFd c = Dial(ConnectLine(kGuestCid, kAgentPort));
  auto rx = fe.WaitRx(1);
  ASSERT_EQ(rx.size(), 1u) << Logs();
  const uint32_t host_port = rx[0].h.src_port;
  c.reset();
  rx = fe.WaitRx(1);
  ASSERT_EQ(rx.size(), 1u) << Logs();
  EXPECT_EQ(rx[0].h.op, static_cast<uint16_t>(Op::kRst));
  EXPECT_EQ(rx[0].h.src_port, host_port);
  // The guest's late RESPONSE meets no connection: answered with a RST, nothing opened.
  fe.SendTx(fe.FromGuest(Op::kResponse, kAgentPort, host_port));
  rx = fe.WaitRx(1);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].h.op, static_cast<uint16_t>(Op::kRst));
  EXPECT_EQ(dev_->stats().connects, 0u);
}

TEST_F(VsockDeviceTest, APortNobodyListensOnIsReset) {
  FakeFrontend fe(Socket());
  fe.SetUp(/*reply_ack=*/false);
  fe.PostRx(4);
  fe.SendTx(fe.FromGuest(Op::kRequest, 40001, 9999));
  auto rx = fe.WaitRx(1);
  ASSERT_EQ(rx.size(), 1u) << Logs();
  EXPECT_EQ(rx[0].h.op, static_cast<uint16_t>(Op::kRst));
  EXPECT_EQ(rx[0].h.src_port, 9999u);
  EXPECT_EQ(rx[0].h.dst_port, 40001u);
  EXPECT_FALSE(TakeStream(nullptr, 300ms).valid());
}

TEST_F(VsockDeviceTest, AMegabyteToTheGuestFollowsItsCreditAndItsBuffers) {
  FakeFrontend fe(Socket());
  fe.SetUp();
  fe.PostRx(8);
  const uint32_t guest_buf = 64 << 10;
  fe.SendTx(fe.FromGuest(Op::kRequest, 40002, kPort, guest_buf));
  ASSERT_EQ(fe.WaitRx(1).size(), 1u);
  UniqueFd stream = TakeStream();
  ASSERT_TRUE(stream.valid());
  std::string data(1 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 7 + i / 4096) & 0xff);
  std::thread writer([&] { ASSERT_TRUE(WriteAll(stream.get(), data).ok()); });
  std::string got;
  uint32_t fwd = 0;
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (got.size() < data.size() && std::chrono::steady_clock::now() < deadline) {
    auto rx = fe.WaitRx(1);
    for (const auto& p : rx) {
      ASSERT_EQ(p.h.op, static_cast<uint16_t>(Op::kRw));
      ASSERT_LE(p.payload.size(), 4096u);
      got += p.payload;
      // Never more unconsumed at the guest than it advertised.
      ASSERT_LE(got.size() - fwd, guest_buf);
    }
    // The guest's reader consumed it all: new buffers and a credit update.
    fwd = static_cast<uint32_t>(got.size());
    fe.PostRx(static_cast<int>(rx.size()));
    if (!rx.empty()) fe.SendTx(fe.FromGuest(Op::kCreditUpdate, 40002, kPort, guest_buf, fwd));
  }
  writer.join();
  ASSERT_EQ(got.size(), data.size());
  EXPECT_TRUE(got == data);
}

TEST_F(VsockDeviceTest, AGuestThatBreaksARingLosesTheFrontendAndTheNextOneIsServed) {
  {
    FakeFrontend fe(Socket());
    fe.SetUp();
    fe.BreakTx();
    EXPECT_TRUE(fe.Closed());
  }
  EXPECT_EQ(dev_->stats().protocol_errors, 1u);
  EXPECT_NE(Logs().find("broke a virtqueue"), std::string::npos) << Logs();
  FakeFrontend again(Socket());
  again.SetUp();
  again.PostRx(2);
  again.SendTx(again.FromGuest(Op::kRequest, 40003, kPort));
  auto rx = again.WaitRx(1);
  ASSERT_EQ(rx.size(), 1u);
  EXPECT_EQ(rx[0].h.op, static_cast<uint16_t>(Op::kResponse));
}

TEST_F(VsockDeviceTest, GetVringBaseStopsTheRingAndSaysWhereItStopped) {
  FakeFrontend fe(Socket());
  fe.SetUp(/*reply_ack=*/false);
  fe.PostRx(2);
  for (uint32_t p = 0; p < 3; ++p) fe.SendTx(fe.FromGuest(Op::kRequest, 41000 + p, 9999));
  ASSERT_EQ(fe.WaitRx(2).size(), 2u);  // two buffers: two of the three RSTs
  fe.Send(vhost::Request::kGetVringBase, FakeFrontend::State(1, 0));
  EXPECT_EQ(fe.ReadReply(), FakeFrontend::State(1, 3));
  fe.Send(vhost::Request::kGetVringBase, FakeFrontend::State(0, 0));
  EXPECT_EQ(fe.ReadReply(), FakeFrontend::State(0, 2));
}

TEST_F(VsockDeviceTest, AMemoryTableWithoutItsFdsIsRefused) {
  FakeFrontend fe(Socket());
  fe.AskU64(vhost::Request::kGetFeatures);
  fe.Send(vhost::Request::kSetProtocolFeatures, FakeFrontend::U64(vhost::kProtocolReplyAck));
  fe.Send(vhost::Request::kSetMemTable, FakeFrontend::MemTable(), {}, vhost::kFlagNeedReply);
  EXPECT_EQ(fe.ReadReply(), FakeFrontend::U64(1));
  EXPECT_TRUE(fe.Closed());
  EXPECT_NE(Logs().find("SET_MEM_TABLE"), std::string::npos) << Logs();
}

TEST(VsockDeviceCreateTest, ASocketPathInAMissingDirectoryIsAnError) {
  VsockDeviceOptions o;
  o.socket_path = "/nonexistent-dir/vsock.sock";
  auto d = VsockDevice::Create(std::move(o));
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("/nonexistent-dir/vsock.sock"), std::string::npos)
      << d.status();
}

}  // namespace
}  // namespace fun::vsock

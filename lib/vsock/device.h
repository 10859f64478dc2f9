// device.h: a virtio-vsock device served by fun-hostd itself as a vhost-user back-end, so that
// streams between the guest kernel and fun-hostd cross no other process.
//
// QEMU (`-device vhost-user-vsock-pci,chardev=C -chardev socket,id=C,path=<socket>`, guest
// memory shared: `-object memory-backend-memfd,share=on`) connects to the socket, hands over
// the guest's memory and the two virtqueues (rx: device to driver, tx: driver to device; QEMU
// keeps the event queue), and gets out of the data path: the guest kicks an eventfd this
// device waits on, the device reads and writes the rings in the shared memory, and signals
// QEMU's call eventfd to raise the interrupt.
//
// The host end is CID 2. When the guest connects to a port in `ports`, the device makes a
// socketpair, keeps one end and hands the other to `on_connection` (on the device thread: it
// must not block): bytes written there reach the guest and the guest's bytes can be read
// there; closing it ends the stream (the guest sees a shutdown). Connections are accepted as
// they come: the owner decides what a stream may do (fun-hostd asks for the instance secret
// first). Everything the guest writes goes through lib/vhost's SplitQueue and lib/vsock's Mux,
// which check it; QEMU's messages through lib/vhost/message.h.
//
//   VsockDeviceOptions o{.socket_path = dir + "/vsock.sock", .guest_cid = 3, .ports = {5640}};
//   o.on_connection = [](uint32_t port, UniqueFd fd) { ... };
//   FUN_ASSIGN_OR_RETURN(auto dev, VsockDevice::Create(o));   // listening now
//   std::thread t([&] { (void)dev->Run(); });                   // until Stop()
//   ... start QEMU ...
//   dev->Stop(); t.join();
//
// One front-end at a time; when QEMU disconnects (exit, crash) every stream is closed and the
// device waits for the next QEMU. Linux only (eventfd, memfd mappings from QEMU).
// Thread-safety: Run on one thread; Stop and stats from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lib/base/status.h"
#include "lib/base/unique_fd.h"

namespace fun::vsock {

struct VsockDeviceOptions {
  std::string socket_path;  // the vhost-user socket QEMU connects to (created 0600)
  uint64_t guest_cid = 3;
  std::vector<uint32_t> ports;  // host ports the guest may connect to
  std::function<void(uint32_t port, UniqueFd stream)> on_connection;
  // Where host programs connect to ports the guest listens on, as with HyperKit's virtio-sock
  // (packet.h, ConnectLine): a unix client (the socket is 0600) writes "%08x.%08x\n" (this
  // device's guest_cid and the port) and its connection then is the stream to that guest port;
  // the device closes it when the line is wrong, no guest is up, or the guest refuses. Empty:
  // no connect socket.
  std::string connect_socket_path;
  uint32_t buf_alloc = 1 << 20;  // per stream, advertised to the guest
  size_t max_connections = 256;
  // Where the device says what happened (a front-end came, went, broke the protocol). Default:
  // lib/base/log.
  std::function<void(const std::string&)> log;
};

struct VsockDeviceStats {
  uint64_t frontends = 0;        // QEMU connections accepted
  uint64_t streams = 0;          // guest connections handed to on_connection
  uint64_t connects = 0;         // host connections through the connect socket the guest accepted
  uint64_t connects_failed = 0;  // refused by the guest, a wrong line, or no guest up
  uint64_t bytes_to_guest = 0;
  uint64_t bytes_from_guest = 0;
  uint64_t notifies = 0;         // interrupts requested from QEMU
  uint64_t protocol_errors = 0;  // front-ends dropped for a bad message or a broken ring
  // The host's reply latency: on a stream the guest opened, the time from the guest's latest
  // bytes to the first bytes the host sends after them (for a request/response protocol such as
  // 9P: from the whole request to its reply, including the hand-off to the owner of the stream
  // and back). Host time only: the guest's share of a round trip (its kick, its interrupt) is
  // not in it. Streams opened through the connect socket are not timed: there the guest answers.
  uint64_t replies = 0;
  uint64_t reply_latency_ns = 0;  // the sum over `replies`
};

class VsockDevice {
 public:
  static StatusOr<std::unique_ptr<VsockDevice>> Create(VsockDeviceOptions o);
  ~VsockDevice();

  // Serves front-ends until Stop(). Errors only for what ends the device itself (epoll).
  Status Run();
  void Stop();
  VsockDeviceStats stats() const;

  class Impl;

 private:
  explicit VsockDevice(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fun::vsock

// vsock_probe: what a process in a container meets when it dials fun-hostd's 9P port over
// vsock (the harness copies this static binary into a share and runs it in containers). vsock
// is not namespaced: any container can connect; fun-hostd must turn it away because it cannot
// know the instance secret. Prints one line:
//   connect failed: <error>                 (the port is not reachable at all)
//   refused: <reply status>: <message>      (fun-hostd answered the request with a refusal)
//   closed without a reply                  (fun-hostd hung up, e.g. on bytes that are no request)
//   ACCEPTED                                (fun-hostd said ok: the test fails on this)
//
//   vsock_probe PORT TAG [--raw]   --raw sends a 9P Tversion instead of an agent request
#include <linux/vm_sockets.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "lib/net/agent_protocol.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: vsock_probe PORT TAG [--raw]\n");
    return 2;
  }
  const bool raw = argc > 3 && std::strcmp(argv[3], "--raw") == 0;
  int fd = ::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    std::printf("connect failed: socket: %s\n", std::strerror(errno));
    return 0;
  }
  sockaddr_vm sa{};
  sa.svm_family = AF_VSOCK;
  sa.svm_cid = VMADDR_CID_HOST;
  sa.svm_port = static_cast<unsigned>(std::atoi(argv[1]));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    std::printf("connect failed: %s\n", std::strerror(errno));
    return 0;
  }
  std::string out;
  if (raw) {
    // Tversion, tag 0xffff, msize 8192, "9P2000.L": a 9P client that skips the request.
    const unsigned char tversion[] = {21, 0, 0,   0,   100, 0xff, 0xff, 0,   0x20, 0,  0,
                                      8,  0, '9', 'P', '2', '0',  '0',  '0', '.',  'L'};
    out.assign(reinterpret_cast<const char*>(tversion), sizeof(tversion));
  } else {
    // A guess at the secret: zeros. The container cannot read the real one.
    auto req = fun::agent::EncodeRequest(
        {.token = fun::agent::Token{}, .kind = fun::agent::Kind::kP9, .target = argv[2]});
    if (!req.ok()) return 2;
    out = *req;
  }
  if (::write(fd, out.data(), out.size()) != static_cast<ssize_t>(out.size())) {
    std::printf("closed without a reply (write: %s)\n", std::strerror(errno));
    return 0;
  }
  std::string got;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 15000) != 1) {
      std::printf("no answer within 15 s\n");
      return 0;
    }
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) {
      std::printf("closed without a reply\n");
      return 0;
    }
    got.append(buf, static_cast<size_t>(n));
    auto reply = fun::agent::DecodeReply(got);
    if (!reply.ok()) {
      std::printf("closed without a reply (bytes that are no reply: %s)\n",
                  reply.status().message().c_str());
      return 0;
    }
    if (*reply) {
      const auto& r = (*reply)->first;
      if (r.status == fun::agent::ReplyStatus::kOk) {
        std::printf("ACCEPTED\n");
      } else {
        std::printf("refused: %s: %s\n", std::string(fun::agent::ReplyStatusName(r.status)).c_str(),
                    r.message.c_str());
      }
      return 0;
    }
  }
}

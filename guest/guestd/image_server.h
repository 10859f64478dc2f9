// image_server.h: a read-only image registry inside the VM, serving OCI image layouts that ship
// in the VM image (/usr/share/fun/images/<name>/: oci-layout, index.json, blobs/sha256/...).
//
// containerd pulls the pod sandbox (pause) image from it, so pods work with no registry on the
// host and no internet: sandbox_image = "127.0.0.1:5001/fun/pause:1.0" and a hosts.toml that
// trusts 127.0.0.1:5001 over plain HTTP. It speaks the part of the distribution API a pull
// uses: GET/HEAD /v2/, /v2/<name>/manifests/<tag|digest>, /v2/<name>/blobs/<digest>; one
// request per connection (Connection: close). Requests are parsed by lib/net/http_request.h
// (pure, fuzzed); names and digests are checked before any file is opened, and only files
// under the image dir are ever read.
//
//   FUN_ASSIGN_OR_RETURN(auto s, ImageServer::Create({.listen = "tcp:127.0.0.1:5001"}));
//   std::thread t([&] { s->Run(); });   ...   s->Stop(); t.join();
//
// Thread-safety: Run on one thread; Stop from any thread. Respond is a function of its inputs
// and the files.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "lib/base/status.h"
#include "lib/base/unique_fd.h"
#include "lib/net/http_request.h"

namespace fun::guestd {

struct ImageServerOptions {
  std::string listen = "tcp:127.0.0.1:5001";
  std::string dir = "/usr/share/fun/images";
  int max_connections = 64;
};

// What to send back: status line, headers, then the body (inline or a file's contents).
struct HttpResponse {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string body_file;  // when set, the body is this file (Content-Length is its size)
  std::string Head(size_t content_length) const;
};

// The response to `r` for the layouts under `dir` (pure apart from reading those files).
HttpResponse Respond(const std::string& dir, const net::HttpRequest& r);

class ImageServer {
 public:
  static StatusOr<std::unique_ptr<ImageServer>> Create(const ImageServerOptions& options);
  ~ImageServer();
  // "tcp:127.0.0.1:PORT" as bound.
  const std::string& address() const { return address_; }
  // Accepts and serves until Stop(); each connection on a thread of its own (bounded).
  void Run();
  void Stop();

 private:
  explicit ImageServer(const ImageServerOptions& options);
  void Serve(int fd);

  ImageServerOptions options_;
  UniqueFd listen_fd_;
  UniqueFd stop_fd_;
  std::string address_;
};

}  // namespace fun::guestd

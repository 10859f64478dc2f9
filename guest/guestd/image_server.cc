#include "guest/guestd/image_server.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "lib/base/log.h"
#include "lib/base/socket.h"

namespace fun::guestd {

namespace {

std::string_view Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    default:
      return "Internal Server Error";
  }
}

HttpResponse Error(int status, std::string_view code, std::string_view message) {
  HttpResponse r;
  r.status = status;
  r.headers.emplace_back("Content-Type", "application/json");
  r.body = nlohmann::json{{"errors", {{{"code", code}, {"message", message}}}}}.dump();
  return r;
}

bool LowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// Repository names as the distribution API allows them: components of [a-z0-9] joined by one
// of . _ - (or __), separated by '/'. Never "." or "..", so the name is a safe relative path.
bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > 255) return false;
  size_t start = 0;
  for (;;) {
    const size_t slash = name.find('/', start);
    const std::string_view c = name.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (c.empty() || !LowerAlnum(c.front()) || !LowerAlnum(c.back())) return false;
    for (size_t i = 0; i < c.size(); ++i) {
      const char ch = c[i];
      if (LowerAlnum(ch)) continue;
      if (ch != '.' && ch != '_' && ch != '-') return false;
    }
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

// "sha256:<64 lowercase hex>" -> the hex, else "".
std::string Sha256Hex(std::string_view digest) {
  constexpr std::string_view kPrefix = "sha256:";
  if (digest.substr(0, kPrefix.size()) != kPrefix || digest.size() != kPrefix.size() + 64)
    return "";
  const std::string_view hex = digest.substr(kPrefix.size());
  for (char c : hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return "";
  }
  return std::string(hex);
}

bool RegularFile(const std::string& path, off_t* size) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  *size = st.st_size;
  return true;
}

HttpResponse Blob(const std::string& layout, const std::string& digest, const std::string& type) {
  const std::string hex = Sha256Hex(digest);
  if (hex.empty()) return Error(400, "DIGEST_INVALID", "only sha256:<64 hex digits> digests");
  const std::string file = layout + "/blobs/sha256/" + hex;
  off_t size = 0;
  if (!RegularFile(file, &size)) return Error(404, "BLOB_UNKNOWN", "no such blob");
  HttpResponse r;
  r.headers.emplace_back("Content-Type", type);
  r.headers.emplace_back("Docker-Content-Digest", digest);
  r.body_file = file;
  return r;
}

// The layout's index.json, when it is an OCI index with a manifests array.
std::optional<nlohmann::json> ReadIndex(const std::string& layout) {
  std::ifstream in(layout + "/index.json");
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  auto index = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (!index.is_object() || !index.contains("manifests") || !index["manifests"].is_array()) {
    return std::nullopt;
  }
  return index;
}

}  // namespace

std::string HttpResponse::Head(size_t content_length) const {
  std::string h = fmt::format("HTTP/1.1 {} {}\r\n", status, Reason(status));
  for (const auto& [k, v] : headers) h += k + ": " + v + "\r\n";
  h += fmt::format("Content-Length: {}\r\n", content_length);
  h += "Docker-Distribution-API-Version: registry/2.0\r\nConnection: close\r\n\r\n";
  return h;
}

HttpResponse Respond(const std::string& dir, const net::HttpRequest& req) {
  if (req.method != "GET" && req.method != "HEAD") {
    HttpResponse r = Error(405, "UNSUPPORTED", "this registry is read-only");
    r.headers.emplace_back("Allow", "GET, HEAD");
    return r;
  }
  std::string_view path = req.target;
  path = path.substr(0, path.find('?'));
  if (path == "/v2/" || path == "/v2") {
    HttpResponse r;
    r.headers.emplace_back("Content-Type", "application/json");
    r.body = "{}";
    return r;
  }
  if (path.substr(0, 4) != "/v2/") return Error(404, "NAME_UNKNOWN", "not a registry path");
  path.remove_prefix(4);
  constexpr std::string_view kTags = "/tags/list";
  const bool tags = path.size() > kTags.size() && path.substr(path.size() - kTags.size()) == kTags;
  if (tags) {
    const std::string_view name = path.substr(0, path.size() - kTags.size());
    if (!ValidName(name)) return Error(400, "NAME_INVALID", "invalid repository name");
    auto index = ReadIndex(dir + "/" + std::string(name));
    if (!index) return Error(404, "NAME_UNKNOWN", "no such repository");
    nlohmann::json list = nlohmann::json::array();
    for (const auto& m : (*index)["manifests"]) {
      if (m.is_object() && m.contains("annotations") && m["annotations"].is_object() &&
          m["annotations"].contains("org.opencontainers.image.ref.name")) {
        list.push_back(m["annotations"]["org.opencontainers.image.ref.name"]);
      }
    }
    HttpResponse r;
    r.headers.emplace_back("Content-Type", "application/json");
    r.body = nlohmann::json{{"name", name}, {"tags", list}}.dump();
    return r;
  }
  size_t cut = path.rfind("/manifests/");
  const bool manifest = cut != std::string_view::npos;
  if (!manifest) cut = path.rfind("/blobs/");
  if (cut == std::string_view::npos) return Error(404, "NAME_UNKNOWN", "not a registry path");
  const std::string_view name = path.substr(0, cut);
  const std::string_view ref = path.substr(cut + (manifest ? 11 : 7));
  if (!ValidName(name)) return Error(400, "NAME_INVALID", "invalid repository name");
  const std::string layout = dir + "/" + std::string(name);
  if (!manifest) return Blob(layout, std::string(ref), "application/octet-stream");

  // A manifest by tag (the index's ref.name annotation) or by digest.
  auto index = ReadIndex(layout);
  if (!index) return Error(404, "NAME_UNKNOWN", "no such repository");
  for (const auto& m : (*index)["manifests"]) {
    if (!m.is_object()) continue;
    const std::string digest = m.value("digest", "");
    const std::string type = m.value("mediaType", "application/vnd.oci.image.manifest.v1+json");
    std::string tag;
    if (m.contains("annotations") && m["annotations"].is_object()) {
      tag = m["annotations"].value("org.opencontainers.image.ref.name", "");
    }
    if (ref == digest || (!tag.empty() && ref == tag)) return Blob(layout, digest, type);
  }
  return Error(404, "MANIFEST_UNKNOWN", "no such tag or digest");
}

ImageServer::ImageServer(const ImageServerOptions& options) : options_(options) {}

ImageServer::~ImageServer() = default;

StatusOr<std::unique_ptr<ImageServer>> ImageServer::Create(const ImageServerOptions& options) {
  FUN_ASSIGN_OR_RETURN(SocketAddress addr, ParseSocketAddress(options.listen));
  std::unique_ptr<ImageServer> s(new ImageServer(options));
  FUN_ASSIGN_OR_RETURN(s->listen_fd_, Listen(addr));
  FUN_ASSIGN_OR_RETURN(s->address_, LocalAddress(s->listen_fd_.get()));
  s->stop_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s->stop_fd_.valid()) return ErrnoError(errno, "eventfd");
  return s;
}

void ImageServer::Stop() {
  uint64_t one = 1;
  (void)!::write(stop_fd_.get(), &one, sizeof(one));
}

void ImageServer::Run() {
  std::atomic<int> live{0};
  for (;;) {
    pollfd p[2] = {{.fd = listen_fd_.get(), .events = POLLIN, .revents = 0},
                   {.fd = stop_fd_.get(), .events = POLLIN, .revents = 0}};
    if (::poll(p, 2, -1) < 0 && errno != EINTR) break;
    if (p[1].revents != 0) break;
    if (p[0].revents == 0) continue;
    int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    if (live.load() >= options_.max_connections) {
      ::close(fd);
      continue;
    }
    ++live;
    std::thread([this, fd, &live] {
      Serve(fd);
      ::close(fd);
      --live;
    }).detach();
  }
  // The connection threads hold `live` by reference: wait for them (each has its timeouts).
  while (live.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

void ImageServer::Serve(int fd) {
  timeval tv{.tv_sec = 10, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  std::string buf;
  char chunk[2048];
  StatusOr<std::optional<std::pair<net::HttpRequest, size_t>>> got =
      std::optional<std::pair<net::HttpRequest, size_t>>();
  for (;;) {
    got = net::ParseHttpRequestHead(buf);
    if (!got.ok() || got->has_value()) break;
    ssize_t n = ::read(fd, chunk, sizeof(chunk));
    if (n <= 0) return;
    buf.append(chunk, static_cast<size_t>(n));
  }
  if (!got.ok()) {
    HttpResponse bad = Error(400, "UNSUPPORTED", got.status().message());
    (void)WriteAll(fd, bad.Head(bad.body.size()) + bad.body);
    return;
  }
  const net::HttpRequest& req = (*got)->first;
  HttpResponse r = Respond(options_.dir, req);
  const bool head = req.method == "HEAD";
  if (r.body_file.empty()) {
    (void)WriteAll(fd, r.Head(r.body.size()) + (head ? "" : r.body));
  } else {
    UniqueFd file(::open(r.body_file.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st {};
    if (!file.valid() || ::fstat(file.get(), &st) != 0) {
      HttpResponse err = Error(500, "UNKNOWN", "cannot read the blob");
      (void)WriteAll(fd, err.Head(err.body.size()) + err.body);
      return;
    }
    if (!WriteAll(fd, r.Head(static_cast<size_t>(st.st_size))).ok() || head) return;
    char data[64 * 1024];
    for (;;) {
      ssize_t n = ::read(file.get(), data, sizeof(data));
      if (n <= 0) break;
      if (!WriteAll(fd, std::string_view(data, static_cast<size_t>(n))).ok()) break;
    }
  }
  FUN_LOG(Debug, "image server: {} {} -> {}", req.method, req.target, r.status);
}

}  // namespace fun::guestd

// The VM's read-only image registry, against real clients: skopeo (the same distribution API
// containerd uses) and raw HTTP for the error cases. The layouts are images/build.sh's.
#include "guest/guestd/image_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "lib/base/socket.h"

namespace fun::guestd {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Shell(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return "popen failed";
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int rc = ::pclose(p);
  return out + (rc == 0 ? "" : "\n[exit " + std::to_string(rc) + "]");
}

class ImageServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(FUN_IMAGES_DIR "/pause/index.json", R_OK) != 0) {
      GTEST_SKIP() << "no " FUN_IMAGES_DIR "/pause: build the fun_images target";
    }
    char tmpl[] = "/tmp/fun-imgsrv-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    ASSERT_EQ(
        std::system(("mkdir -p '" + dir_ + "/images/fun' && cp -a '" FUN_IMAGES_DIR "/pause' '" +
                     dir_ + "/images/fun/pause'")
                        .c_str()),
        0);
    auto s = ImageServer::Create({.listen = "tcp:127.0.0.1:0", .dir = dir_ + "/images"});
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    host_ = server_->address().substr(4);  // "127.0.0.1:PORT"
    thread_ = std::thread([this] { server_->Run(); });
  }
  void TearDown() override {
    if (server_) {
      server_->Stop();
      thread_.join();
    }
    if (!dir_.empty()) std::system(("rm -rf '" + dir_ + "'").c_str());  // NOLINT
  }
  // One raw request; the whole reply.
  std::string Http(const std::string& request) {
    auto addr = ParseSocketAddress(server_->address());
    auto fd = Connect(*addr);
    EXPECT_TRUE(fd.ok());
    if (!fd.ok()) return "";
    EXPECT_TRUE(WriteAll(fd->get(), request).ok());
    std::string reply;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd->get(), buf, sizeof(buf))) > 0) reply.append(buf, static_cast<size_t>(n));
    return reply;
  }

  std::string dir_;
  std::string host_;
  std::unique_ptr<ImageServer> server_;
  std::thread thread_;
};

TEST_F(ImageServerTest, SkopeoPullsThePauseImageByteForByte) {
  const std::string ref = "docker://" + host_ + "/fun/pause:1.0";
  std::string inspect = Shell("skopeo inspect --tls-verify=false " + ref);
  EXPECT_THAT(inspect, HasSubstr("\"Digest\": \"sha256:"));
  EXPECT_THAT(inspect, Not(HasSubstr("[exit")));
  std::string copy =
      Shell("skopeo copy --src-tls-verify=false " + ref + " oci:" + dir_ + "/out:1.0");
  EXPECT_THAT(copy, Not(HasSubstr("[exit"))) << copy;
  // The same manifest digest as the layout it came from.
  std::string theirs = Shell("skopeo inspect --raw oci:" + dir_ + "/out:1.0 | sha256sum");
  std::string ours = Shell("skopeo inspect --raw oci:" FUN_IMAGES_DIR "/pause:1.0 | sha256sum");
  EXPECT_EQ(theirs, ours);
}

TEST_F(ImageServerTest, RegistryErrorsAndConfinement) {
  EXPECT_THAT(Http("GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n"), HasSubstr("HTTP/1.1 200 OK"));
  EXPECT_THAT(Http("HEAD /v2/fun/pause/manifests/1.0 HTTP/1.1\r\n\r\n"),
              HasSubstr("Docker-Content-Digest: sha256:"));
  EXPECT_THAT(Http("GET /v2/fun/pause/tags/list HTTP/1.1\r\n\r\n"),
              HasSubstr("{\"name\":\"fun/pause\",\"tags\":[\"1.0\"]}"));
  EXPECT_THAT(Http("GET /v2/fun/pause/manifests/2.0 HTTP/1.1\r\n\r\n"), HasSubstr("404 Not Found"));
  EXPECT_THAT(Http("GET /v2/fun/nothing/manifests/1.0 HTTP/1.1\r\n\r\n"),
              HasSubstr("404 Not Found"));
  EXPECT_THAT(Http("GET /v2/../../etc/manifests/passwd HTTP/1.1\r\n\r\n"),
              HasSubstr("400 Bad Request"));
  EXPECT_THAT(Http("GET /v2/fun/pause/blobs/sha256:..%2f..%2fetc HTTP/1.1\r\n\r\n"),
              HasSubstr("400 Bad Request"));
  EXPECT_THAT(Http("GET /v2/fun/pause/blobs/sha256:" + std::string(64, 'a') + " HTTP/1.1\r\n\r\n"),
              HasSubstr("404 Not Found"));
  EXPECT_THAT(Http("PUT /v2/fun/pause/manifests/1.0 HTTP/1.1\r\n\r\n"),
              HasSubstr("405 Method Not Allowed"));
  EXPECT_THAT(Http("\x16\x03\x01 not http\r\n\r\n"), HasSubstr("400 Bad Request"));
  // The server still serves after all that.
  EXPECT_THAT(Http("GET /v2/ HTTP/1.0\r\n\r\n"), HasSubstr("200 OK"));
}

}  // namespace
}  // namespace fun::guestd

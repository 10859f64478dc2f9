#include "lib/net/http_request.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace fun::net {
namespace {

using ::testing::HasSubstr;

TEST(HttpRequestTest, ParsesARegistryClientsRequest) {
  const std::string wire =
      "GET /v2/fun/pause/manifests/1.0 HTTP/1.1\r\nHost: 127.0.0.1:5001\r\n"
      "User-Agent: containerd/1.6.20\r\nAccept:  application/vnd.oci.image.manifest.v1+json \r\n"
      "\r\nbody bytes";
  auto got = ParseHttpRequestHead(wire);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->has_value());
  const HttpRequest& r = (*got)->first;
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.target, "/v2/fun/pause/manifests/1.0");
  EXPECT_EQ(r.version, "HTTP/1.1");
  ASSERT_NE(r.Header("accept"), nullptr);
  EXPECT_EQ(*r.Header("accept"), "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(*r.Header("host"), "127.0.0.1:5001");
  EXPECT_EQ((*got)->second, wire.find("body bytes"));
}

TEST(HttpRequestTest, IncompleteHeadsWaitForMoreByteByByte) {
  const std::string wire = "HEAD /v2/ HTTP/1.0\r\nX: y\r\n\r\n";
  for (size_t n = 0; n < wire.size(); ++n) {
    auto got = ParseHttpRequestHead(wire.substr(0, n));
    ASSERT_TRUE(got.ok()) << n << ": " << got.status();
    EXPECT_FALSE(got->has_value()) << n;
  }
  EXPECT_TRUE(ParseHttpRequestHead(wire)->has_value());
}

TEST(HttpRequestTest, WhatIsNotARequestHeadIsRefused) {
  auto msg = [](const std::string& wire) {
    auto got = ParseHttpRequestHead(wire);
    return got.ok() ? std::string("accepted") : got.status().message();
  };
  EXPECT_THAT(msg("\x16\x03\x01\x02"), HasSubstr("method"));
  EXPECT_THAT(msg("GET /\r\n\r\n"), HasSubstr("METHOD TARGET VERSION"));
  EXPECT_THAT(msg("GET http://x/ HTTP/1.1\r\n\r\n"), HasSubstr("not a path"));
  EXPECT_THAT(msg("GET / HTTP/2\r\n\r\n"), HasSubstr("version"));
  EXPECT_THAT(msg("GET / HTTP/1.1\r\nno colon\r\n\r\n"), HasSubstr("NAME: VALUE"));
  EXPECT_THAT(msg("GET / HTTP/1.1\r\nX: a\x01"
                  "b\r\n\r\n"),
              HasSubstr("control character"));
  EXPECT_THAT(msg("GET /" + std::string(9000, 'a')), HasSubstr("8 KiB"));
  std::string many = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 65; ++i) many += "X: y\r\n";
  EXPECT_THAT(msg(many + "\r\n"), HasSubstr("64 headers"));
}

}  // namespace
}  // namespace fun::net

#include "lib/cri/image_ref.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace fun::cri {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Canon(std::string_view ref) {
  auto r = ParseImageRef(ref);
  return r.ok() ? r->Canonical() : "error: " + r.status().message();
}

TEST(ImageRefTest, NormalizesLikeDocker) {
  EXPECT_EQ(Canon("busybox"), "docker.io/library/busybox:latest");
  EXPECT_EQ(Canon("busybox:1.36"), "docker.io/library/busybox:1.36");
  EXPECT_EQ(Canon("library/busybox"), "docker.io/library/busybox:latest");
  EXPECT_EQ(Canon("ann/app"), "docker.io/ann/app:latest");
  EXPECT_EQ(Canon("10.0.2.2:5000/fun/busybox:latest"), "10.0.2.2:5000/fun/busybox:latest");
  EXPECT_EQ(Canon("localhost/app"), "localhost/app:latest");
  EXPECT_EQ(Canon("localhost:5000/a/b/c:v1.2-rc_3"), "localhost:5000/a/b/c:v1.2-rc_3");
  EXPECT_EQ(Canon("registry.example.com/my-app__x.y"), "registry.example.com/my-app__x.y:latest");
  EXPECT_EQ(Canon("[::1]:5000/app:1"), "[::1]:5000/app:1");
  const std::string digest = "sha256:" + std::string(64, 'a');
  EXPECT_EQ(Canon("busybox@" + digest), "docker.io/library/busybox@" + digest);
  EXPECT_EQ(Canon("busybox:1@" + digest), "docker.io/library/busybox:1@" + digest);
}

TEST(ImageRefTest, BadReferencesSayWhichPartIsWrong) {
  EXPECT_THAT(Canon(""), HasSubstr("it is empty"));
  EXPECT_THAT(Canon("BusyBox"), HasSubstr("not a name component"));
  EXPECT_THAT(Canon("busybox:"), HasSubstr("the tag"));
  EXPECT_THAT(Canon("busybox:-x"), HasSubstr("the tag"));
  EXPECT_THAT(Canon("busybox:" + std::string(129, 'a')), HasSubstr("the tag"));
  EXPECT_THAT(Canon("a//b"), HasSubstr("not a name component"));
  EXPECT_THAT(Canon("a/b/"), HasSubstr("not a name component"));
  EXPECT_THAT(Canon("-a"), HasSubstr("not a name component"));
  EXPECT_THAT(Canon("a..b"), HasSubstr("not a name component"));
  EXPECT_THAT(Canon("host:99999999/app"), HasSubstr("registry host"));
  EXPECT_THAT(Canon("bad_host.com/app"), HasSubstr("registry host"));
  EXPECT_THAT(Canon("busybox@sha256:abc"), HasSubstr("digest"));
  EXPECT_THAT(Canon("busy box"), HasSubstr("invalid image reference"));
  EXPECT_THAT(Canon("a/" + std::string(300, 'b')), HasSubstr("longer than 255"));
  EXPECT_THAT(Canon("docker.io/"), HasSubstr("the name is empty"));
  EXPECT_THAT(Canon("x:1"), Not(HasSubstr("error")));
}

}  // namespace
}  // namespace fun::cri

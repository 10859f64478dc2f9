#include "tools/fun-9p/fun9p.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>

namespace fun::fun9p {
namespace {

using ::testing::HasSubstr;

TEST(ParseExportTest, Forms) {
  auto a = ParseExport("home=/home/ann");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->name, "home");
  EXPECT_EQ(a->dir, "/home/ann");
  EXPECT_FALSE(a->read_only);
  auto b = ParseExport("src=/srv/src/:ro");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->dir, "/srv/src");
  EXPECT_TRUE(b->read_only);
  auto c = ParseExport("x=/a:b:rw");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->dir, "/a:b");
  EXPECT_FALSE(c->read_only);
}

TEST(ParseExportTest, Refusals) {
  for (const char* bad : {"/home/ann", "=/x", "a/b=/x", "x=relative", "x=", "x=:ro"}) {
    auto r = ParseExport(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("use NAME=DIR or NAME=DIR:ro")) << bad;
  }
}

TEST(ParseServeArgsTest, Good) {
  auto o =
      ParseServeArgs({"--export", "a=/tmp", "--export=b=/var:ro", "--listen", "tcp:127.0.0.1:0",
                      "--listen", "unix:/tmp/x.sock", "--msize", "262144", "--workers", "8"});
  ASSERT_TRUE(o.ok()) << o.status();
  ASSERT_EQ(o->server.exports.size(), 2u);
  EXPECT_TRUE(o->server.exports[1].read_only);
  EXPECT_EQ(o->listen.size(), 2u);
  EXPECT_EQ(o->server.max_msize, 262144u);
  EXPECT_EQ(o->server.workers, 8);
}

TEST(ParseServeArgsTest, Refusals) {
  struct Case {
    std::vector<std::string> args;
    std::string want;
  };
  for (const auto& c : std::vector<Case>{
           {{"--listen", "tcp:127.0.0.1:0"}, "at least one --export"},
           {{"--export", "a=/tmp"}, "nothing to serve on"},
           {{"--export", "a=/tmp", "--listen", "tcp:nowhere"}, "--listen: bad address"},
           {{"--export", "a=/tmp", "--fd", "x"}, "--fd: \"x\" is not an integer"},
           {{"--export", "a=/tmp", "--fd", "3", "--msize", "100"}, "--msize: 100 is out of range"},
           {{"--export", "a=/tmp", "--fd", "3", "--log-level", "loud"}, "--log-level"},
           {{"--export", "a=/tmp", "--fd", "3", "extra"}, "unexpected argument \"extra\""},
           {{"--exports", "a=/tmp"}, "unknown flag --exports"},
       }) {
    auto r = ParseServeArgs(c.args);
    ASSERT_FALSE(r.ok()) << c.want;
    EXPECT_THAT(r.status().message(), HasSubstr(c.want));
  }
}

TEST(RunTest, UsageAndUnknownCommand) {
  std::ostringstream out, err;
  std::atomic<bool> stop{false};
  EXPECT_EQ(fun9p::Run({}, out, err, &stop), 2);
  EXPECT_THAT(err.str(), HasSubstr("usage: fun-9p serve"));
  err.str("");
  EXPECT_EQ(fun9p::Run({"mount"}, out, err, &stop), 2);
  EXPECT_THAT(err.str(), HasSubstr("unknown command \"mount\""));
  EXPECT_EQ(
      fun9p::Run({"serve", "--export", "a=/nonexistent-fun-dir", "--listen", "tcp:127.0.0.1:0"},
                 out, err, &stop),
      1);
  EXPECT_THAT(err.str(), HasSubstr("/nonexistent-fun-dir"));
}

}  // namespace
}  // namespace fun::fun9p

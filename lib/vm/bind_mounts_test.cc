#include "lib/vm/bind_mounts.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

namespace fun::vm {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using Mode = VolumeSpec::Mode;

// --- ParseVolumeSpec ------------------------------------------------------------------------

TEST(ParseVolumeSpecTest, HostPathContainerPathAndMode) {
  auto v = ParseVolumeSpec("/home/a/src:/src");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->host_path, "/home/a/src");
  EXPECT_EQ(v->container_path, "/src");
  EXPECT_EQ(v->mode, Mode::kDefault);
  EXPECT_EQ(v->spec, "/home/a/src:/src");
  EXPECT_EQ(ParseVolumeSpec("/a:/b:ro")->mode, Mode::kReadOnly);
  EXPECT_EQ(ParseVolumeSpec("/a:/b:rw")->mode, Mode::kReadWrite);
  // The host path is kept as typed: realpath resolves it later (".." after a symlink is not
  // the lexical parent).
  EXPECT_EQ(ParseVolumeSpec("/a/../b/:/b")->host_path, "/a/../b/");
}

TEST(ParseVolumeSpecTest, ContainerPathIsCleanedAsDockerDoes) {
  EXPECT_EQ(ParseVolumeSpec("/a:/data/")->container_path, "/data");
  EXPECT_EQ(ParseVolumeSpec("/a://data/./x//")->container_path, "/data/x");
  EXPECT_EQ(ParseVolumeSpec("/a:/data/../etc/x")->container_path, "/etc/x");
  EXPECT_EQ(ParseVolumeSpec("/a:/../../x")->container_path, "/x");
}

// Every refusal: InvalidArgument, one line, starting with the spec, saying `what`.
void ExpectRefused(std::string_view spec, std::string_view what) {
  auto v = ParseVolumeSpec(spec);
  ASSERT_FALSE(v.ok()) << spec;
  EXPECT_EQ(v.status().code(), Code::kInvalidArgument) << spec;
  EXPECT_THAT(v.status().message(), StartsWith(fmt::format("-v {:.200}: ", spec)));
  EXPECT_THAT(v.status().message(), HasSubstr(what)) << spec;
  EXPECT_EQ(v.status().message().find('\n'), std::string::npos) << v.status().message();
}

TEST(ParseVolumeSpecTest, NamedAnonymousAndRelativeVolumesAreRefused) {
  ExpectRefused("data:/data",
                "named volumes are not supported; give an absolute host path (-v "
                "/path/on/host:/data)");
  ExpectRefused("my_vol-1.x:/data", "named volumes are not supported");
  ExpectRefused("/data", "anonymous volumes are not supported");
  ExpectRefused("data", "anonymous volumes are not supported");
  ExpectRefused("./data:/data",
                "the host path ./data is relative; give an absolute one "
                "(\"$PWD/data\")");
  ExpectRefused(".:/src", "(\"$PWD\")");
  ExpectRefused("src/x:/src", "(\"$PWD/src/x\")");
  ExpectRefused("~/data:/data", "(\"$HOME/data\")");
  ExpectRefused("../up:/up", "is relative");
}

TEST(ParseVolumeSpecTest, WindowsPathsAndEmptyPartsAreRefused) {
  ExpectRefused("C:\\data:/data", "Windows paths are not supported");
  ExpectRefused("c:/data:/data", "Windows paths are not supported");
  ExpectRefused("\\\\server\\share:/data", "Windows paths are not supported");
  ExpectRefused("", "empty");
  ExpectRefused(":/data", "the host path is empty");
  ExpectRefused("/a:", "the container path is empty");
  ExpectRefused("/a::ro", "the container path is empty");
  ExpectRefused("/a:/b:", "the options after the last ':' are empty");
  ExpectRefused("/a:/b:ro:x", "too many ':'");
  ExpectRefused("/a:b:c:d", "too many ':'");
}

TEST(ParseVolumeSpecTest, BadContainerPathsAreRefused) {
  ExpectRefused("/a:data", "the container path data is relative; give an absolute one (/data)");
  ExpectRefused("/a:/", "the container path is \"/\"");
  ExpectRefused("/a:/x/..", "the container path is \"/\"");
  ExpectRefused("/a://", "the container path is \"/\"");
  ExpectRefused("/a:/" + std::string(4096, 'x'), "longer than 4095");
  ExpectRefused("/" + std::string(4096, 'x') + ":/b", "longer than 4095");
}

TEST(ParseVolumeSpecTest, OnlyRoOrRwOnce) {
  ExpectRefused("/a:/b:z", "option \"z\" is not supported; the options are ro and rw");
  ExpectRefused("/a:/b:Z", "option \"Z\" is not supported");
  ExpectRefused("/a:/b:shared", "option \"shared\" is not supported");
  ExpectRefused("/a:/b:ro,nocopy", "option \"nocopy\" is not supported");
  ExpectRefused("/a:/b:cached", "Docker Desktop ignores it too");
  ExpectRefused("/a:/b:delegated", "drop it");
  ExpectRefused("/a:/b:ro,rw", "give one of ro and rw, once");
  ExpectRefused("/a:/b:ro,ro", "give one of ro and rw, once");
  ExpectRefused("/a:/b:ro,", "option \"\" is not supported");
  ExpectRefused("/a:/b:RO", "option \"RO\" is not supported");
}

TEST(ParseVolumeSpecTest, AContainerPathTwiceIsRefused) {
  auto two = ParseVolumeSpecs({"/a:/data", "/b:/other:ro"});
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->size(), 2u);
  // The same host path at two places is fine (Docker allows it).
  EXPECT_TRUE(ParseVolumeSpecs({"/a:/x", "/a:/y"}).ok());
  auto dup = ParseVolumeSpecs({"/a:/data", "/b:/data/./"});
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(dup.status().message(),
            "-v /b:/data/./: /data is already mounted (-v /a:/data); give each container path "
            "once");
  EXPECT_FALSE(ParseVolumeSpecs({"/a:/data", "bad"}).ok());
}

TEST(CleanAbsolutePathTest, AsGoPathClean) {
  EXPECT_EQ(CleanAbsolutePath("/"), "/");
  EXPECT_EQ(CleanAbsolutePath("//"), "/");
  EXPECT_EQ(CleanAbsolutePath("/a/b"), "/a/b");
  EXPECT_EQ(CleanAbsolutePath("/a/b/"), "/a/b");
  EXPECT_EQ(CleanAbsolutePath("//a//./b/."), "/a/b");
  EXPECT_EQ(CleanAbsolutePath("/a/../b"), "/b");
  EXPECT_EQ(CleanAbsolutePath("/.."), "/");
  EXPECT_EQ(CleanAbsolutePath("/a/b/../../.."), "/");
}

// --- MapHostPathToGuest --------------------------------------------------------------------

VmShares Vm(std::vector<Share> shares) {
  return {.shares = std::move(shares),
          .config_path = "/home/a/.local/state/fun/instances/default/config.json",
          .instance = "default"};
}

std::string Guest(std::string_view host, const VmShares& vm) {
  auto loc = MapHostPathToGuest(host, vm);
  EXPECT_TRUE(loc.ok()) << loc.status();
  return loc.ok() ? loc->guest_path : "";
}

TEST(MapHostPathToGuestTest, TheSamePathByDefault) {
  const VmShares vm = Vm({{.host_path = "/home/a", .guest_path = "/home/a", .tag = "home"}});
  EXPECT_EQ(Guest("/home/a", vm), "/home/a");
  EXPECT_EQ(Guest("/home/a/src/x", vm), "/home/a/src/x");
  auto loc = MapHostPathToGuest("/home/a/src", vm);
  ASSERT_TRUE(loc.ok());
  EXPECT_EQ(loc->share.tag, "home");
  // An unnormalized share (guest_path not filled in) means the same path.
  EXPECT_EQ(Guest("/home/a/x", Vm({{.host_path = "/home/a"}})), "/home/a/x");
}

TEST(MapHostPathToGuestTest, AGuestPathOtherThanTheHostPath) {
  const VmShares vm = Vm({{.host_path = "/Users/alice", .guest_path = "/mnt/host"}});
  EXPECT_EQ(Guest("/Users/alice", vm), "/mnt/host");
  EXPECT_EQ(Guest("/Users/alice/p/q", vm), "/mnt/host/p/q");
  // The whole host shared at /host.
  EXPECT_EQ(Guest("/etc/x", Vm({{.host_path = "/", .guest_path = "/host"}})), "/host/etc/x");
  EXPECT_EQ(Guest("/", Vm({{.host_path = "/", .guest_path = "/host"}})), "/host");
}

TEST(MapHostPathToGuestTest, TheLongestMatchingShareWins) {
  const VmShares vm = Vm({
      {.host_path = "/home/a", .guest_path = "/home/a"},
      {.host_path = "/home/a/src", .guest_path = "/mnt/src", .read_only = true},
      {.host_path = "/home", .guest_path = "/mnt/home"},
  });
  EXPECT_EQ(Guest("/home/a/src/x", vm), "/mnt/src/x");
  EXPECT_TRUE(MapHostPathToGuest("/home/a/src/x", vm)->share.read_only);
  EXPECT_EQ(Guest("/home/a/srcx", vm), "/home/a/srcx");
  EXPECT_EQ(Guest("/home/a/other", vm), "/home/a/other");
  EXPECT_EQ(Guest("/home/b", vm), "/mnt/home/b");
  // On a tie (one folder shared twice), the first in config order.
  const VmShares twice =
      Vm({{.host_path = "/d", .guest_path = "/one"}, {.host_path = "/d", .guest_path = "/two"}});
  EXPECT_EQ(Guest("/d/x", twice), "/one/x");
}

TEST(MapHostPathToGuestTest, ComponentsNotCharacters) {
  const VmShares vm = Vm({{.host_path = "/home/a", .guest_path = "/home/a"}});
  auto ab = MapHostPathToGuest("/home/ab", vm);
  ASSERT_FALSE(ab.ok());
  EXPECT_FALSE(MapHostPathToGuest("/home", vm).ok());
  // Shares written with extra slashes still match by component.
  EXPECT_EQ(Guest("/home/a/x", Vm({{.host_path = "/home//a/", .guest_path = "/g/"}})), "/g/x");
}

TEST(MapHostPathToGuestTest, OutsideEveryShareNamesTheConfig) {
  const VmShares vm = Vm({{.host_path = "/root", .guest_path = "/root"},
                          {.host_path = "/opt/ro", .guest_path = "/opt/ro", .read_only = true}});
  auto loc = MapHostPathToGuest("/srv/data", vm);
  ASSERT_FALSE(loc.ok());
  EXPECT_EQ(loc.status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(loc.status().message(),
            "/srv/data is not under a shared folder (shares: /root, /opt/ro (read-only)); share "
            "it: fun-vmctl stop default && fun-vmctl start default --share /srv/data (or add it "
            "to \"shares\" in /home/a/.local/state/fun/instances/default/config.json)");
  auto none = MapHostPathToGuest("/srv/data", Vm({}));
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(none.status().message(), HasSubstr("(shares: none)"));
}

// --- With a real file system: PlanBindMounts, ResolveShareHostPaths, CheckHostPaths ---------

class BindMountsFsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/bind_mounts_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    char real[PATH_MAX];
    ASSERT_NE(::realpath(tmpl.c_str(), real), nullptr);
    dir_ = real;
    for (const char* d : {"/share", "/share/sub", "/ro", "/outside"}) {
      ASSERT_EQ(::mkdir((dir_ + d).c_str(), 0755), 0) << d;
    }
    // A symlink from outside into the share, one from the share out of it, and a symlink that
    // is itself shared.
    ASSERT_EQ(::symlink((dir_ + "/share/sub").c_str(), (dir_ + "/into").c_str()), 0);
    ASSERT_EQ(::symlink((dir_ + "/outside").c_str(), (dir_ + "/share/out").c_str()), 0);
    ASSERT_EQ(::symlink((dir_ + "/outside").c_str(), (dir_ + "/outlink").c_str()), 0);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Shares of share/ and ro/ (read-only); with `linked`, also outlink/, a symlink to outside/.
  VmShares TheVm(bool linked = false) const {
    std::vector<Share> shares = {
        {.host_path = dir_ + "/share", .guest_path = "/mnt/share"},
        {.host_path = dir_ + "/ro", .guest_path = "/mnt/ro", .read_only = true},
    };
    if (linked) shares.push_back({.host_path = dir_ + "/outlink", .guest_path = "/mnt/linked"});
    return Vm(ResolveShareHostPaths(std::move(shares)));
  }

  StatusOr<std::vector<cri::BindMount>> Plan(std::vector<std::string> specs, const VmShares* vm) {
    auto parsed = ParseVolumeSpecs(specs);
    if (!parsed.ok()) return parsed.status();
    return PlanBindMounts(*parsed, vm);
  }

  std::string dir_;
};

TEST_F(BindMountsFsTest, NativeMountsTheResolvedHostPath) {
  auto m = Plan({dir_ + "/share/sub/../sub:/data", dir_ + "/into:/into:ro"}, nullptr);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->size(), 2u);
  EXPECT_EQ((*m)[0], (cri::BindMount{.host_path = dir_ + "/share/sub",
                                     .source = dir_ + "/share/sub",
                                     .container_path = "/data",
                                     .readonly = false}));
  // A symlink is mounted as what it leads to.
  EXPECT_EQ((*m)[1].host_path, dir_ + "/share/sub");
  EXPECT_EQ((*m)[1].source, dir_ + "/share/sub");
  EXPECT_TRUE((*m)[1].readonly);
  // A file is fine too (Docker mounts files).
  ASSERT_EQ(::close(::creat((dir_ + "/file").c_str(), 0644)), 0);
  EXPECT_TRUE(Plan({dir_ + "/file:/etc/x:ro"}, nullptr).ok());
}

TEST_F(BindMountsFsTest, AMissingHostPathIsRefusedAndNotCreated) {
  const std::string missing = dir_ + "/nope/deeper";
  auto m = Plan({missing + ":/data"}, nullptr);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Code::kNotFound);
  EXPECT_EQ(m.status().message(),
            fmt::format("-v {}:/data: {} does not exist; create it first (mkdir -p {}): fun does "
                        "not create host folders",
                        missing, missing, missing));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/nope"));
  // The same in a VM.
  const VmShares vm = TheVm();
  EXPECT_EQ(Plan({dir_ + "/share/nope:/data"}, &vm).status().code(), Code::kNotFound);
  // A dangling symlink does not exist either.
  ASSERT_EQ(::symlink((dir_ + "/gone").c_str(), (dir_ + "/dangling").c_str()), 0);
  EXPECT_EQ(Plan({dir_ + "/dangling:/data"}, nullptr).status().code(), Code::kNotFound);
}

TEST_F(BindMountsFsTest, VmMountsThePathInTheShare) {
  const VmShares vm = TheVm();
  auto m = Plan({dir_ + "/share/sub:/data", dir_ + "/share:/all:ro"}, &vm);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)[0], (cri::BindMount{.host_path = dir_ + "/share/sub",
                                     .source = "/mnt/share/sub",
                                     .container_path = "/data",
                                     .readonly = false}));
  EXPECT_EQ((*m)[1].source, "/mnt/share");
  EXPECT_TRUE((*m)[1].readonly);
}

TEST_F(BindMountsFsTest, SymlinksAreJudgedByTheirTarget) {
  const VmShares vm = TheVm();
  // Into the share: fine, mounted as the share's path.
  auto into = Plan({dir_ + "/into:/data"}, &vm);
  ASSERT_TRUE(into.ok()) << into.status();
  EXPECT_EQ((*into)[0].source, "/mnt/share/sub");
  // Out of the share (the 9P server would not follow it either): refused, saying where it
  // leads.
  auto out = Plan({dir_ + "/share/out:/data"}, &vm);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::kFailedPrecondition);
  EXPECT_THAT(out.status().message(),
              StartsWith(fmt::format("-v {0}/share/out:/data: {0}/share/out resolves to "
                                     "{0}/outside: {0}/outside is not under a shared folder",
                                     dir_)));
  EXPECT_THAT(out.status().message(), HasSubstr("add it to \"shares\" in "));
  // A share that is itself a symlink holds what it leads to.
  const VmShares with_link = TheVm(/*linked=*/true);
  auto linked = Plan({dir_ + "/outside:/data"}, &with_link);
  ASSERT_TRUE(linked.ok()) << linked.status();
  EXPECT_EQ((*linked)[0].source, "/mnt/linked");
}

TEST_F(BindMountsFsTest, AReadOnlyShareMakesTheMountReadOnly) {
  const VmShares vm = TheVm();
  auto m = Plan({dir_ + "/ro:/a", dir_ + "/ro:/b:ro"}, &vm);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE((*m)[0].readonly);
  EXPECT_EQ((*m)[0].source, "/mnt/ro");
  EXPECT_TRUE((*m)[1].readonly);
  auto rw = Plan({dir_ + "/ro:/a:rw"}, &vm);
  ASSERT_FALSE(rw.ok());
  EXPECT_EQ(rw.status().code(), Code::kFailedPrecondition);
  EXPECT_THAT(rw.status().message(),
              HasSubstr(fmt::format("is in the read-only shared folder {}/ro; drop :rw", dir_)));
  // Natively there are no shares: rw is rw.
  auto native = Plan({dir_ + "/ro:/a:rw"}, nullptr);
  ASSERT_TRUE(native.ok());
  EXPECT_FALSE((*native)[0].readonly);
}

TEST_F(BindMountsFsTest, OutsideEveryShare) {
  const VmShares vm = TheVm();
  auto m = Plan({"/:/host"}, &vm);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), StartsWith("-v /:/host: / is not under a shared folder"));
}

TEST_F(BindMountsFsTest, ResolveShareHostPathsKeepsWhatCannotBeResolved) {
  auto shares = ResolveShareHostPaths(
      {{.host_path = dir_ + "/outlink"}, {.host_path = dir_ + "/missing", .guest_path = "/m"}});
  EXPECT_EQ(shares[0].host_path, dir_ + "/outside");
  EXPECT_EQ(shares[0].guest_path, dir_ + "/outlink");  // the guest path stays the configured one
  EXPECT_EQ(shares[1].host_path, dir_ + "/missing");
  EXPECT_EQ(shares[1].guest_path, "/m");
}

TEST_F(BindMountsFsTest, CheckHostPathsForStart) {
  std::vector<cri::BindMount> mounts = {
      {.host_path = dir_ + "/share", .source = "/s", .container_path = "/s"}};
  EXPECT_TRUE(CheckHostPaths(mounts).ok());
  mounts.push_back({.host_path = dir_ + "/removed", .source = "/r", .container_path = "/data"});
  Status s = CheckHostPaths(mounts);
  EXPECT_EQ(s.code(), Code::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr(fmt::format("the host path {}/removed of the mount on /data "
                                                 "is gone; create it again",
                                                 dir_)));
}

}  // namespace
}  // namespace fun::vm

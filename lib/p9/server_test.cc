#include "lib/p9/server.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "lib/base/files.h"
#include "lib/p9/testing/test_client.h"

namespace fun::p9 {
namespace {

using testing::Reply;
using testing::SessionClient;
using testing::StreamClient;

// 9P2000.L open flags as the Linux client sends them.
constexpr uint32_t kRdonly = 0, kWronly = 1, kRdwr = 2, kCreat = 0100, kExcl = 0200, kTrunc = 01000,
                   kDirectory = 0200000;

// The resolvers of this build: the portable node primitives (FUN_P9_PORTABLE_NODES: macOS,
// and fun_p9_portable on Linux) go with the walk resolver only.
std::vector<ResolverKind> TestedResolvers() {
#ifdef FUN_P9_PORTABLE_NODES
  return {ResolverKind::kWalk};
#else
  return {ResolverKind::kOpenat2, ResolverKind::kWalk};
#endif
}

std::string TempRoot() {
  const char* t = std::getenv("TMPDIR");
  std::string tmpl = std::string(t != nullptr && *t != '\0' ? t : "/tmp") + "/p9srv-XXXXXX";
  EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream(path) << content;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

template <typename T>
int E(const StatusOr<T>& r) {
  return r.status().sys_errno();
}
int E(const Status& s) { return s.sys_errno(); }

class ServerTest : public ::testing::TestWithParam<ResolverKind> {
 protected:
  void SetUp() override {
    base_ = TempRoot();
    exp_ = base_ + "/export";
    ro_ = base_ + "/ro";
    other_ = base_ + "/other";
    out_ = base_ + "/outside";
    for (const auto& d : {exp_, ro_, other_, out_}) ASSERT_EQ(::mkdir(d.c_str(), 0755), 0);
    WriteFile(out_ + "/secret", "secret");
    WriteFile(exp_ + "/file", "hello world");
    ASSERT_EQ(::mkdir((exp_ + "/sub").c_str(), 0755), 0);
    WriteFile(exp_ + "/sub/inner", "inner");
    ASSERT_EQ(::symlink("/etc", (exp_ + "/abs").c_str()), 0);
    ASSERT_EQ(::symlink("../outside", (exp_ + "/rel").c_str()), 0);
    ASSERT_EQ(::symlink("../../outside/secret", (exp_ + "/sub/up").c_str()), 0);
    WriteFile(ro_ + "/file", "read only");
    ASSERT_EQ(::mkdir((ro_ + "/d").c_str(), 0755), 0);
    WriteFile(other_ + "/o", "other");
    server_ = MakeServer({});
  }

  void TearDown() override {
    if (server_) server_->Shutdown();
    for (auto& t : threads_) t.join();
    threads_.clear();
    server_.reset();
    std::string cmd = "rm -rf '" + base_ + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }

  std::unique_ptr<Server> MakeServer(ServerOptions o) {
    if (o.exports.empty()) {
      o.exports = {{"e", exp_}, {"ro", ro_, true}, {"other", other_}};
    }
    if (o.workers == 0) o.workers = 4;
    o.resolver = GetParam();
    auto s = Server::Create(o);
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(s).value();
  }

  // A versioned session with fid 0 attached to export "e".
  std::unique_ptr<SessionClient> Attached(const std::string& aname = "e", uint32_t uid = 0) {
    auto c = std::make_unique<SessionClient>(server_->NewSession());
    EXPECT_TRUE(c->Version().ok());
    auto q = c->Attach(0, aname, uid);
    EXPECT_TRUE(q.ok()) << q.status();
    return c;
  }

  // A socketpair served by ServeConnection on its own thread.
  std::unique_ptr<StreamClient> Connect(Server& server) {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    threads_.emplace_back([&server, fd = sv[1]] { server.ServeConnection(fd, "socketpair"); });
    return std::make_unique<StreamClient>(sv[0]);
  }

  std::string base_, exp_, ro_, other_, out_;
  std::unique_ptr<Server> server_;
  std::vector<std::thread> threads_;
};

INSTANTIATE_TEST_SUITE_P(Resolvers, ServerTest, ::testing::ValuesIn(TestedResolvers()),
                         [](const auto& p) { return std::string(ResolverName(p.param)); });

// ---- Create ---------------------------------------------------------------------------------

TEST_P(ServerTest, CreateValidatesExports) {
  EXPECT_FALSE(Server::Create({}).ok());
  EXPECT_FALSE(Server::Create({.exports = {{"a", exp_}, {"a", ro_}}}).ok());
  EXPECT_FALSE(Server::Create({.exports = {{"", exp_}}}).ok());
  auto missing = Server::Create({.exports = {{"a", base_ + "/missing"}}});
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("\"a\""), std::string::npos) << missing.status();
  EXPECT_EQ(E(Server::Create({.exports = {{"a", exp_ + "/file"}}})), ENOTDIR);
  EXPECT_FALSE(Server::Create({.exports = {{"a", exp_}}, .max_msize = 1000}).ok());
}

// ---- Version / attach -----------------------------------------------------------------------

TEST_P(ServerTest, VersionNegotiatesMsize) {
  SessionClient c(server_->NewSession());
  // Nothing before Tversion.
  EXPECT_EQ(E(c.Attach(0, "e")), EPROTO);
  auto r = c.CallFor<Rversion>(Tversion{.msize = 8192, .version = "9P2000.L"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->msize, 8192u);
  EXPECT_EQ(r->version, "9P2000.L");
  r = c.CallFor<Rversion>(Tversion{.msize = 64 << 20, .version = "9P2000.L"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->msize, 1u << 20);  // capped at max_msize
  EXPECT_EQ(c.session().msize(), 1u << 20);
  EXPECT_EQ(E(c.CallFor<Rversion>(Tversion{.msize = 2048, .version = "9P2000.L"})), EINVAL);
  r = c.CallFor<Rversion>(Tversion{.msize = 8192, .version = "9P2000"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->version, "unknown");
  r = c.CallFor<Rversion>(Tversion{.msize = 8192, .version = "9P2000.u"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->version, "unknown");
}

TEST_P(ServerTest, VersionClunksEveryFid) {
  auto c = Attached();
  ASSERT_TRUE(c->Walk(0, 1, {"file"}).ok());
  EXPECT_EQ(c->session().fid_count(), 2u);
  ASSERT_TRUE(c->Version().ok());
  EXPECT_EQ(c->session().fid_count(), 0u);
  EXPECT_EQ(E(c->Getattr(0)), EBADF);
}

TEST_P(ServerTest, AttachSelectsExport) {
  SessionClient c(server_->NewSession());
  ASSERT_TRUE(c.Version().ok());
  auto byname = c.Attach(1, "e");
  ASSERT_TRUE(byname.ok());
  EXPECT_EQ(byname->type, kQidDir);
  auto bydir = c.Attach(2, exp_);
  ASSERT_TRUE(bydir.ok());
  EXPECT_EQ(*bydir, *byname);
  EXPECT_TRUE(c.Attach(3, exp_ + "/").ok());
  auto other = c.Attach(4, "other");
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->path, byname->path);
  EXPECT_EQ(E(c.Attach(5, "")), ENOENT);  // three exports: "" is ambiguous
  EXPECT_EQ(E(c.Attach(5, "nope")), ENOENT);
  EXPECT_EQ(E(c.Attach(5, base_)), ENOENT);
  EXPECT_EQ(E(c.Attach(1, "e")), EINVAL);  // fid in use
  EXPECT_EQ(E(c.CallFor<Rauth>(Tauth{.afid = 9, .uname = "u", .aname = "e"})), ENOENT);

  auto single = MakeServer({.exports = {{"only", exp_}}});
  SessionClient s(single->NewSession());
  ASSERT_TRUE(s.Version().ok());
  EXPECT_TRUE(s.Attach(1, "").ok());
}

// ---- Walk -----------------------------------------------------------------------------------

TEST_P(ServerTest, WalkCloneAndPartial) {
  auto c = Attached();
  auto clone = c->Walk(0, 1, {});
  ASSERT_TRUE(clone.ok());
  EXPECT_TRUE(clone->empty());
  EXPECT_TRUE(c->Getattr(1).ok());
  auto full = c->Walk(0, 2, {"sub", "inner"});
  ASSERT_TRUE(full.ok());
  ASSERT_EQ(full->size(), 2u);
  EXPECT_EQ((*full)[0].type, kQidDir);
  EXPECT_EQ((*full)[1].type, kQidFile);
  EXPECT_EQ(c->Getattr(2)->size, 5u);
  // Partial: the qids walked so far, and no new fid.
  auto partial = c->Walk(0, 3, {"sub", "missing", "x"});
  ASSERT_TRUE(partial.ok());
  EXPECT_EQ(partial->size(), 1u);
  EXPECT_EQ(E(c->Getattr(3)), EBADF);
  // Failing on the first name is an error.
  EXPECT_EQ(E(c->Walk(0, 3, {"missing"})), ENOENT);
  EXPECT_EQ(E(c->Walk(2, 3, {"x"})), ENOTDIR);
  EXPECT_EQ(E(c->Walk(0, 2, {"file"})), EINVAL);  // newfid in use
  EXPECT_EQ(E(c->Walk(42, 3, {})), EBADF);        // unknown fid
  // newfid == fid moves the fid.
  ASSERT_TRUE(c->Walk(1, 1, {"sub"}).ok());
  EXPECT_EQ(c->Getattr(1)->qid.type, kQidDir);
  // ".." at the root stays at the root; elsewhere it goes up.
  auto up = c->Walk(0, 4, {"..", "..", "sub", "..", ".."});
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(c->Getattr(4)->qid, c->Getattr(0)->qid);
  // 16 names is the limit (the codec refuses more).
  std::vector<std::string> sixteen(16, ".");
  EXPECT_TRUE(c->Walk(0, 5, sixteen).ok());
}

TEST_P(ServerTest, WalkNeverLeavesTheExport) {
  auto c = Attached();
  // Through symlinks out: the walk stops at the link, which is not a directory to us.
  for (auto names : std::vector<std::vector<std::string>>{
           {"abs", "passwd"}, {"rel", "secret"}, {"sub", "up", "x"}}) {
    auto r = c->Walk(0, 10, names);
    ASSERT_TRUE(r.ok()) << names[0];
    EXPECT_EQ(r->size(), names.size() - 1) << names[0];
    EXPECT_EQ(E(c->Getattr(10)), EBADF);
  }
  // Onto a symlink: a fid for the link itself.
  ASSERT_TRUE(c->Walk(0, 11, {"abs"}).ok());
  auto a = c->Getattr(11);
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(S_ISLNK(a->mode));
  EXPECT_EQ(a->qid.type, kQidSymlink);
  EXPECT_EQ(c->Readlink(11).value(), "/etc");
  EXPECT_EQ(E(c->Lopen(11, kRdonly)), ELOOP);
  // Names with '/' or NUL, and empty names.
  for (const std::string& bad : {std::string("sub/inner"), std::string("../outside"),
                                 std::string("/etc"), std::string("a\0b", 3), std::string()}) {
    EXPECT_EQ(E(c->Walk(0, 12, {bad})), EINVAL);
  }
  // A symlink the client makes does not help either.
  ASSERT_TRUE(c->Symlink(0, "mine", "/etc").ok());
  auto r = c->Walk(0, 13, {"mine", "passwd"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(), 1u);
  EXPECT_EQ(::readlink((exp_ + "/mine").c_str(), std::array<char, 8>().data(), 8), 4);
}

// ---- Attributes -----------------------------------------------------------------------------

TEST_P(ServerTest, GetattrIsComplete) {
  auto c = Attached();
  ASSERT_TRUE(c->Walk(0, 1, {"file"}).ok());
  auto a = c->Getattr(1);
  ASSERT_TRUE(a.ok());
  struct stat st;
  ASSERT_EQ(::stat((exp_ + "/file").c_str(), &st), 0);
  EXPECT_EQ(a->valid & kGetattrBasic, kGetattrBasic);
  EXPECT_EQ(a->mode, st.st_mode);
  EXPECT_EQ(a->uid, st.st_uid);
  EXPECT_EQ(a->gid, st.st_gid);
  EXPECT_EQ(a->nlink, st.st_nlink);
  EXPECT_EQ(a->size, static_cast<uint64_t>(st.st_size));
  EXPECT_EQ(a->blocks, static_cast<uint64_t>(st.st_blocks));
  EXPECT_EQ(a->blksize, static_cast<uint64_t>(st.st_blksize));
  EXPECT_EQ(a->mtime_sec, static_cast<uint64_t>(st.st_mtim.tv_sec));
  EXPECT_EQ(a->mtime_nsec, static_cast<uint64_t>(st.st_mtim.tv_nsec));
  EXPECT_EQ(a->ctime_sec, static_cast<uint64_t>(st.st_ctim.tv_sec));
  EXPECT_EQ(a->qid.path, st.st_ino);
  if (a->valid & kGetattrBtime) {
    EXPECT_GT(a->btime_sec, 0u);
  }
}

TEST_P(ServerTest, Setattr) {
  auto c = Attached();
  ASSERT_TRUE(c->Walk(0, 1, {"file"}).ok());
  ASSERT_TRUE(c->Setattr({.fid = 1, .valid = kSetattrMode, .mode = 0600}).ok());
  ASSERT_TRUE(c->Setattr({.fid = 1, .valid = kSetattrSize, .size = 4}).ok());
  ASSERT_TRUE(
      c->Setattr({.fid = 1,
                  .valid = kSetattrAtime | kSetattrAtimeSet | kSetattrMtime | kSetattrMtimeSet,
                  .atime_sec = 1000,
                  .atime_nsec = 5,
                  .mtime_sec = 2000,
                  .mtime_nsec = 6})
          .ok());
  struct stat st;
  ASSERT_EQ(::stat((exp_ + "/file").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_size, 4);
  EXPECT_EQ(st.st_atim.tv_sec, 1000);
  EXPECT_EQ(st.st_atim.tv_nsec, 5);
  EXPECT_EQ(st.st_mtim.tv_sec, 2000);
  // kSetattrMtime without kSetattrMtimeSet: now. Atime untouched.
  ASSERT_TRUE(c->Setattr({.fid = 1, .valid = kSetattrMtime}).ok());
  ASSERT_EQ(::stat((exp_ + "/file").c_str(), &st), 0);
  EXPECT_GT(st.st_mtim.tv_sec, 2000);
  EXPECT_EQ(st.st_atim.tv_sec, 1000);
  EXPECT_EQ(E(c->Setattr(
                {.fid = 1, .valid = kSetattrAtime | kSetattrAtimeSet, .atime_nsec = 1000000000})),
            EINVAL);
  if (::geteuid() == 0) {
    ASSERT_TRUE(
        c->Setattr({.fid = 1, .valid = kSetattrUid | kSetattrGid, .uid = 5, .gid = 6}).ok());
    ASSERT_EQ(::stat((exp_ + "/file").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 5u);
    EXPECT_EQ(st.st_gid, 6u);
  }
  EXPECT_EQ(E(c->Setattr({.fid = 99, .valid = kSetattrMode})), EBADF);
}

// ---- Open, read, write ----------------------------------------------------------------------

TEST_P(ServerTest, LopenReadWrite) {
  auto c = Attached();
  ASSERT_TRUE(c->Walk(0, 1, {"file"}).ok());
  EXPECT_EQ(E(c->Read(1, 0, 100)), EBADF);  // not open
  auto o = c->Lopen(1, kRdwr);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->iounit, (1u << 20) - 24);
  EXPECT_EQ(o->qid.type, kQidFile);
  EXPECT_EQ(E(c->Lopen(1, kRdonly)), EINVAL);  // already open
  EXPECT_EQ(c->Read(1, 0, 100).value(), "hello world");
  EXPECT_EQ(c->Read(1, 6, 3).value(), "wor");
  EXPECT_EQ(c->Read(1, 100, 10).value(), "");
  EXPECT_EQ(c->Write(1, 0, "HELLO").value(), 5u);
  EXPECT_EQ(ReadFile(exp_ + "/file"), "HELLO world");
  EXPECT_TRUE(c->Fsync(1).ok());
  // Read-only open: writes fail.
  ASSERT_TRUE(c->Walk(0, 2, {"file"}).ok());
  ASSERT_TRUE(c->Lopen(2, kRdonly).ok());
  EXPECT_EQ(E(c->Write(2, 0, "x")), EBADF);
  // O_TRUNC.
  ASSERT_TRUE(c->Walk(0, 3, {"file"}).ok());
  ASSERT_TRUE(c->Lopen(3, kWronly | kTrunc).ok());
  EXPECT_EQ(ReadFile(exp_ + "/file"), "");
  // Directories.
  ASSERT_TRUE(c->Walk(0, 4, {"sub"}).ok());
  EXPECT_EQ(E(c->Lopen(4, kRdwr)), EISDIR);
  ASSERT_TRUE(c->Lopen(4, kRdonly | kDirectory).ok());
  EXPECT_EQ(E(c->Read(4, 0, 10)), EISDIR);
  EXPECT_EQ(E(c->Fsync(0)), EBADF);
}

TEST_P(ServerTest, ReadCountIsClampedToMsize) {
  std::string big(20000, 'z');
  WriteFile(exp_ + "/big", big);
  SessionClient c(server_->NewSession());
  ASSERT_TRUE(c.CallFor<Rversion>(Tversion{.msize = 8192, .version = "9P2000.L"}).ok());
  ASSERT_TRUE(c.Attach(0, "e").ok());
  ASSERT_TRUE(c.Walk(0, 1, {"big"}).ok());
  auto o = c.Lopen(1, kRdonly);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->iounit, 8192u - 24);
  auto data = c.Read(1, 0, 100000);
  ASSERT_TRUE(data.ok());
  EXPECT_EQ(data->size(), 8192u - 11);
}

TEST_P(ServerTest, LcreateMakesTheFidTheNewOpenFile) {
  auto c = Attached("e", 1000);
  ASSERT_TRUE(c->Walk(0, 1, {"sub"}).ok());
  auto r = c->Lcreate(1, "made", kRdwr | kCreat, 0640, 2000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->iounit, (1u << 20) - 24);
  EXPECT_EQ(c->Write(1, 0, "data").value(), 4u);
  EXPECT_EQ(c->Read(1, 0, 10).value(), "data");
  EXPECT_EQ(c->Getattr(1)->qid, r->qid);
  struct stat st;
  ASSERT_EQ(::stat((exp_ + "/sub/made").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  if (::geteuid() == 0) {
    EXPECT_EQ(st.st_uid, 1000u);  // the attach's n_uname
    EXPECT_EQ(st.st_gid, 2000u);  // the gid argument
  }
  ASSERT_TRUE(c->Walk(0, 2, {"sub"}).ok());
  EXPECT_EQ(E(c->Lcreate(2, "made", kRdwr | kCreat | kExcl, 0640)), EEXIST);
  EXPECT_EQ(E(c->Lcreate(2, "..", kRdwr | kCreat, 0640)), EEXIST);
  EXPECT_EQ(E(c->Lcreate(2, "a/b", kRdwr | kCreat, 0640)), EINVAL);
  ASSERT_TRUE(c->Walk(0, 3, {"file"}).ok());
  EXPECT_EQ(E(c->Lcreate(3, "x", kRdwr | kCreat, 0640)), ENOTDIR);
}

// ---- Directories ----------------------------------------------------------------------------

TEST_P(ServerTest, ReaddirListsEverythingOnce) {
  auto c = Attached();
  ASSERT_TRUE(c->Walk(0, 1, {}).ok());
  EXPECT_EQ(E(c->Readdir(1, 0, 4096)), EBADF);  // not open
  ASSERT_TRUE(c->Lopen(1, kRdonly | kDirectory).ok());
  auto all = c->ReaddirAll(1, 64);  // tiny counts: one or two entries per reply
  ASSERT_TRUE(all.ok()) << all.status();
  std::set<std::string> names;
  for (const auto& d : *all) EXPECT_TRUE(names.insert(d.name).second) << d.name;
  EXPECT_EQ(names, (std::set<std::string>{".", "..", "file", "sub", "abs", "rel"}));
  ASSERT_TRUE(c->Walk(0, 2, {"file"}).ok());
  ASSERT_TRUE(c->Lopen(2, kRdonly).ok());
  EXPECT_EQ(E(c->Readdir(2, 0, 4096)), ENOTDIR);
}

// 100k files take seconds to create on a slow disk, so one test lists the same directory with
// every resolver of the build (ctest runs every TEST in its own process).
TEST(ServerBigDirTest, HundredThousandEntriesListExactlyOnce) {
  const int kN = 100000;
  std::string root = TempRoot();
  std::string big = root + "/big";
  ASSERT_EQ(::mkdir(big.c_str(), 0755), 0);
  int dfd = ::open(big.c_str(), O_DIRECTORY | O_RDONLY);
  ASSERT_GE(dfd, 0);
  for (int i = 0; i < kN; ++i) {
    ASSERT_EQ(::mknodat(dfd, ("entry-" + std::to_string(i)).c_str(), S_IFREG | 0644, 0), 0);
  }
  ::close(dfd);
  for (ResolverKind kind : TestedResolvers()) {
    SCOPED_TRACE(std::string(ResolverName(kind)));
    auto server = Server::Create({.exports = {{"big", big, true}}, .workers = 4, .resolver = kind});
    ASSERT_TRUE(server.ok());
    SessionClient c((*server)->NewSession());
    ASSERT_TRUE(c.Version().ok());
    ASSERT_TRUE(c.Attach(0, "big").ok());
    ASSERT_TRUE(c.Walk(0, 1, {}).ok());
    ASSERT_TRUE(c.Lopen(1, kRdonly | kDirectory).ok());
    auto start = std::chrono::steady_clock::now();
    // What Linux does: count = msize - 11, next offset = the last entry's offset.
    auto all = c.ReaddirAll(1, (1u << 20) - 11);
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - start)
                    .count();
    ASSERT_TRUE(all.ok()) << all.status();
    std::vector<bool> seen(kN, false);
    size_t dots = 0;
    for (const auto& d : *all) {
      if (d.name == "." || d.name == "..") {
        ++dots;
        continue;
      }
      int i = std::stoi(d.name.substr(6));
      ASSERT_FALSE(seen[static_cast<size_t>(i)]) << "listed twice: " << d.name;
      seen[static_cast<size_t>(i)] = true;
    }
    EXPECT_EQ(dots, 2u);
    EXPECT_EQ(all->size(), static_cast<size_t>(kN) + 2);
    std::printf("%s: listing %d entries took %lld ms\n", std::string(ResolverName(kind)).c_str(),
                kN, static_cast<long long>(took));
    // Linear, not quadratic: well under this even in a sanitizer build.
    EXPECT_LT(took, 5000);
    // Small replies (many Treaddir calls, each resuming where the last stopped) too.
    ASSERT_TRUE(c.Walk(0, 2, {}).ok());
    ASSERT_TRUE(c.Lopen(2, kRdonly | kDirectory).ok());
    auto again = c.ReaddirAll(2, 4096);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->size(), static_cast<size_t>(kN) + 2);
  }
  std::string cmd = "rm -rf '" + root + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
}

TEST_P(ServerTest, MkdirSymlinkMknodLinkRenameUnlink) {
  auto c = Attached();
  auto d = c->Mkdir(0, "d", 0750);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->type, kQidDir);
  EXPECT_EQ(E(c->Mkdir(0, "d")), EEXIST);
  EXPECT_EQ(E(c->Mkdir(0, ".")), EEXIST);
  EXPECT_EQ(E(c->Mkdir(0, "x/y")), EINVAL);
  ASSERT_TRUE(c->Walk(0, 1, {"d"}).ok());
  auto s = c->Symlink(1, "ln", "../file");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->type, kQidSymlink);
  EXPECT_EQ(E(c->Symlink(1, "ln", "x")), EEXIST);
  auto fifo = c->Mknod(1, "fifo", S_IFIFO | 0600);
  ASSERT_TRUE(fifo.ok());
  EXPECT_EQ(E(c->Mknod(1, "dev", S_IFCHR | 0600)), EPERM);
  ASSERT_TRUE(c->Walk(0, 2, {"file"}).ok());
  ASSERT_TRUE(c->Link(1, 2, "hard").ok());
  EXPECT_EQ(ReadFile(exp_ + "/d/hard"), "hello world");
  EXPECT_EQ(E(c->Link(1, 2, "hard")), EEXIST);
  ASSERT_TRUE(c->Renameat(1, "hard", 0, "hard2").ok());
  EXPECT_TRUE(Exists(exp_ + "/hard2"));
  EXPECT_EQ(E(c->Renameat(1, "missing", 0, "x")), ENOENT);
  EXPECT_EQ(E(c->Unlinkat(0, "d", kAtRemoveDir)), ENOTEMPTY);
  EXPECT_EQ(E(c->Unlinkat(0, "nope")), ENOENT);
  ASSERT_TRUE(c->Unlinkat(1, "fifo").ok());
  ASSERT_TRUE(c->Unlinkat(1, "ln").ok());
  ASSERT_TRUE(c->Unlinkat(0, "d", kAtRemoveDir).ok());
  EXPECT_FALSE(Exists(exp_ + "/d"));
  // Trename moves the fid's file; Tremove removes and clunks.
  ASSERT_TRUE(c->Walk(0, 3, {"hard2"}).ok());
  ASSERT_TRUE(c->Walk(0, 4, {"sub"}).ok());
  ASSERT_TRUE(c->Rename(3, 4, "moved").ok());
  EXPECT_TRUE(Exists(exp_ + "/sub/moved"));
  ASSERT_TRUE(c->Remove(3).ok());  // found at its new path
  EXPECT_FALSE(Exists(exp_ + "/sub/moved"));
  EXPECT_EQ(E(c->Getattr(3)), EBADF);
  EXPECT_EQ(E(c->Remove(3)), EBADF);
  ASSERT_TRUE(c->Walk(0, 5, {"sub"}).ok());
  EXPECT_EQ(E(c->Remove(5)), ENOTEMPTY);
  EXPECT_EQ(E(c->Getattr(5)), EBADF);  // clunked even though remove failed
  ASSERT_TRUE(c->Walk(0, 6, {}).ok());
  EXPECT_EQ(E(c->Remove(6)), EBUSY);  // the export root
  EXPECT_TRUE(c->Clunk(2).ok());
  EXPECT_EQ(E(c->Clunk(2)), EBADF);
}

TEST_P(ServerTest, RenameUpdatesRecordedPaths) {
  auto c = Attached();
  ASSERT_TRUE(c->Mkdir(0, "a").ok());
  ASSERT_TRUE(c->Walk(0, 1, {"a"}).ok());
  ASSERT_TRUE(c->Mkdir(1, "b").ok());
  ASSERT_TRUE(c->Walk(1, 2, {"b"}).ok());
  ASSERT_TRUE(c->Renameat(0, "a", 0, "c").ok());
  // ".." from b resolves by recorded path: "c" now.
  ASSERT_TRUE(c->Walk(2, 3, {".."}).ok());
  EXPECT_EQ(c->Getattr(3)->qid, c->Getattr(1)->qid);
  ASSERT_TRUE(c->Remove(2).ok());
  EXPECT_FALSE(Exists(exp_ + "/c/b"));
}

TEST_P(ServerTest, CrossExportRenameAndLinkAreRefused) {
  auto c = Attached();
  ASSERT_TRUE(c->Attach(1, "other").ok());
  ASSERT_TRUE(c->Walk(0, 2, {"file"}).ok());
  ASSERT_TRUE(c->Walk(1, 3, {"o"}).ok());
  EXPECT_EQ(E(c->Renameat(0, "file", 1, "stolen")), EXDEV);
  EXPECT_EQ(E(c->Renameat(1, "o", 0, "pulled")), EXDEV);
  EXPECT_EQ(E(c->Rename(2, 1, "stolen")), EXDEV);
  EXPECT_EQ(E(c->Link(1, 2, "linked")), EXDEV);
  EXPECT_EQ(E(c->Link(0, 3, "linked")), EXDEV);
  EXPECT_FALSE(Exists(other_ + "/stolen"));
  EXPECT_FALSE(Exists(exp_ + "/pulled"));
  EXPECT_FALSE(Exists(other_ + "/linked"));
  EXPECT_FALSE(Exists(exp_ + "/linked"));
  // Bad names as rename targets.
  for (const std::string& bad : {std::string("."), std::string(".."), std::string("../x"),
                                 std::string("/tmp/x"), std::string("a\0b", 3)}) {
    EXPECT_EQ(E(c->Renameat(0, "file", 0, bad)), EINVAL) << bad;
    EXPECT_EQ(E(c->Renameat(0, bad, 0, "x")), EINVAL) << bad;
    EXPECT_EQ(E(c->Unlinkat(0, bad, 0)), EINVAL) << bad;
  }
  EXPECT_TRUE(Exists(exp_ + "/file"));
}

TEST_P(ServerTest, StatfsAndReadOnlyExport) {
  auto c = Attached("ro");
  auto s = c->Statfs(0);
  ASSERT_TRUE(s.ok());
  EXPECT_GT(s->bsize, 0u);
  ASSERT_TRUE(c->Walk(0, 1, {"file"}).ok());
  EXPECT_EQ(E(c->Lopen(1, kRdwr)), EROFS);
  EXPECT_EQ(E(c->Lopen(1, kWronly)), EROFS);
  EXPECT_EQ(E(c->Lopen(1, kRdonly | kTrunc)), EROFS);
  EXPECT_EQ(E(c->Setattr({.fid = 1, .valid = kSetattrMode, .mode = 0600})), EROFS);
  EXPECT_EQ(E(c->Setattr({.fid = 1, .valid = kSetattrSize, .size = 0})), EROFS);
  EXPECT_EQ(E(c->Mkdir(0, "n")), EROFS);
  EXPECT_EQ(E(c->Symlink(0, "n", "t")), EROFS);
  EXPECT_EQ(E(c->Mknod(0, "n", S_IFIFO | 0600)), EROFS);
  EXPECT_EQ(E(c->Link(0, 1, "n")), EROFS);
  EXPECT_EQ(E(c->Rename(1, 0, "n")), EROFS);
  EXPECT_EQ(E(c->Renameat(0, "file", 0, "n")), EROFS);
  EXPECT_EQ(E(c->Unlinkat(0, "file")), EROFS);
  EXPECT_EQ(E(c->Unlinkat(0, "d", kAtRemoveDir)), EROFS);
  EXPECT_EQ(E(c->Xattrcreate(1, "user.x", 1, 0)), EROFS);
  ASSERT_TRUE(c->Walk(0, 2, {}).ok());
  EXPECT_EQ(E(c->Lcreate(2, "n", kRdwr | kCreat, 0644)), EROFS);
  ASSERT_TRUE(c->Walk(0, 3, {"file"}).ok());
  EXPECT_EQ(E(c->Remove(3)), EROFS);
  ASSERT_TRUE(c->Lopen(1, kRdonly).ok());
  EXPECT_EQ(c->Read(1, 0, 100).value(), "read only");
  EXPECT_EQ(E(c->Write(1, 0, "x")), EROFS);
  EXPECT_EQ(ReadFile(ro_ + "/file"), "read only");
  EXPECT_TRUE(Exists(ro_ + "/d"));
}

// ---- Xattrs ---------------------------------------------------------------------------------

TEST_P(ServerTest, Xattrs) {
  auto c = Attached();
  ASSERT_TRUE(c->Walk(0, 1, {"file"}).ok());
  // What the Linux client asks on every write: absent, not an error that breaks writes.
  EXPECT_EQ(E(c->Xattrwalk(1, 2, "security.capability")), ENODATA);
  EXPECT_EQ(E(c->Xattrcreate(1, "security.capability", 4, 0)), EOPNOTSUPP);
  // Set user.color = "blue" (Txattrcreate, Twrite, Tclunk).
  ASSERT_TRUE(c->Walk(0, 3, {"file"}).ok());
  ASSERT_TRUE(c->Xattrcreate(3, "user.color", 4, 0).ok());
  ASSERT_EQ(c->Write(3, 0, "bl").value(), 2u);
  ASSERT_EQ(c->Write(3, 2, "ue").value(), 2u);
  Status clunk = c->Clunk(3);
  if (E(clunk) == EOPNOTSUPP) GTEST_SKIP() << "no user xattrs here";
  ASSERT_TRUE(clunk.ok()) << clunk;
  auto size = c->Xattrwalk(1, 4, "user.color");
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(*size, 4u);
  EXPECT_EQ(c->Read(4, 0, 100).value(), "blue");
  EXPECT_EQ(c->Read(4, 2, 100).value(), "ue");
  ASSERT_TRUE(c->Clunk(4).ok());
  auto list = c->Xattrwalk(1, 5, "");
  ASSERT_TRUE(list.ok());
  EXPECT_NE(c->Read(5, 0, 1000).value().find(std::string("user.color\0", 11)), std::string::npos);
  // Short write: the clunk fails and nothing is set.
  ASSERT_TRUE(c->Walk(0, 6, {"file"}).ok());
  ASSERT_TRUE(c->Xattrcreate(6, "user.short", 10, 0).ok());
  ASSERT_TRUE(c->Write(6, 0, "abc").ok());
  EXPECT_EQ(E(c->Write(6, 8, "abcdef")), ERANGE);
  EXPECT_EQ(E(c->Clunk(6)), EINVAL);
  EXPECT_EQ(E(c->Xattrwalk(1, 7, "user.short")), ENODATA);
  // Size 0 removes.
  ASSERT_TRUE(c->Walk(0, 8, {"file"}).ok());
  ASSERT_TRUE(c->Xattrcreate(8, "user.color", 0, 0).ok());
  ASSERT_TRUE(c->Clunk(8).ok());
  EXPECT_EQ(E(c->Xattrwalk(1, 9, "user.color")), ENODATA);
  EXPECT_EQ(E(c->Xattrcreate(1, "user.huge", 1 << 20, 0)), E2BIG);
}

// ---- Locks ----------------------------------------------------------------------------------

TEST_P(ServerTest, LocksConflictBetweenSessions) {
  auto a = Attached();
  auto b = Attached();
  for (auto* c : {a.get(), b.get()}) {
    ASSERT_TRUE(c->Walk(0, 1, {"file"}).ok());
    ASSERT_TRUE(c->Lopen(1, kRdwr).ok());
  }
  EXPECT_EQ(a->Lock(1, kLockWrite, 0, 0).value(), kLockSuccess);
  EXPECT_EQ(b->Lock(1, kLockRead, 100, 5).value(), kLockBlocked);
  auto held = b->Getlock(1, kLockWrite, 0, 0);
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(held->type, kLockWrite);
  EXPECT_EQ(a->Lock(1, kLockUnlock, 0, 0).value(), kLockSuccess);
  EXPECT_EQ(b->Lock(1, kLockRead, 100, 5).value(), kLockSuccess);
  auto none = a->Getlock(1, kLockRead, 0, 10);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->type, kLockUnlock);
  EXPECT_EQ(none->client_id, "test");
  EXPECT_EQ(a->Lock(1, kLockWrite, 102, 1).value(), kLockBlocked);
  // Clunking b's fid releases its locks.
  ASSERT_TRUE(b->Clunk(1).ok());
  EXPECT_EQ(a->Lock(1, kLockWrite, 102, 1).value(), kLockSuccess);
  ASSERT_TRUE(a->Walk(0, 2, {"file"}).ok());
  EXPECT_EQ(E(a->Lock(2, kLockWrite, 0, 0)), EBADF);  // not open
}

// ---- Over a socket --------------------------------------------------------------------------

TEST_P(ServerTest, ServesASocketpair) {
  auto c = Connect(*server_);
  ASSERT_TRUE(c->Version(256 * 1024).ok());
  ASSERT_TRUE(c->Attach(0, "e").ok());
  ASSERT_TRUE(c->Walk(0, 1, {"file"}).ok());
  ASSERT_TRUE(c->Lopen(1, kRdonly).ok());
  EXPECT_EQ(c->Read(1, 0, 100).value(), "hello world");
  EXPECT_EQ(server_->stats().connections_active, 1u);
  EXPECT_GE(server_->stats().requests, 5u);
  c->Close();
  for (int i = 0; i < 500 && server_->stats().connections_active != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ(server_->stats().connections_active, 0u);
  EXPECT_EQ(server_->stats().connections_total, 1u);
}

// Linux and diod reuse a tag as soon as its reply is in: that is not a duplicate in flight.
TEST_P(ServerTest, TagReusedRightAfterItsReply) {
  auto c = Connect(*server_);
  ASSERT_TRUE(c->Version().ok());
  ASSERT_TRUE(c->Attach(0, "e").ok());
  for (int i = 0; i < 3000; ++i) {
    ASSERT_TRUE(c->Send(0, Tgetattr{.fid = 0, .request_mask = kGetattrAll}).ok());
    auto r = c->Recv();
    ASSERT_TRUE(r.ok()) << "round " << i << ": " << r.status();
    ASSERT_EQ(r->frame.tag, 0);
    ASSERT_NE(r->As<Rgetattr>(), nullptr);
  }
}

TEST_P(ServerTest, BigReadsAndWritesAtOneMegabyteMsize) {
  std::string data(3 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + i / 4096);
  auto c = Connect(*server_);
  ASSERT_TRUE(c->Version(1 << 20).ok());
  ASSERT_TRUE(c->Attach(0, "e").ok());
  ASSERT_TRUE(c->Walk(0, 1, {}).ok());
  auto cr = c->Lcreate(1, "big", kRdwr | kCreat, 0644);
  ASSERT_TRUE(cr.ok());
  uint32_t chunk = cr->iounit;
  for (size_t off = 0; off < data.size(); off += chunk) {
    auto n = c->Write(1, off, std::string_view(data).substr(off, chunk));
    ASSERT_TRUE(n.ok()) << n.status();
    ASSERT_EQ(*n, std::min<size_t>(chunk, data.size() - off));
  }
  std::string back;
  while (true) {
    auto r = c->Read(1, back.size(), chunk);
    ASSERT_TRUE(r.ok());
    if (r->empty()) break;
    back += *r;
  }
  EXPECT_TRUE(back == data);
}

TEST_P(ServerTest, ManyRequestsInFlightAnsweredByTag) {
  std::string content;
  for (int i = 0; i < 64; ++i) content += fmt::format("{:04d}", i);
  WriteFile(exp_ + "/numbers", content);
  auto c = Connect(*server_);
  ASSERT_TRUE(c->Version().ok());
  ASSERT_TRUE(c->Attach(0, "e").ok());
  ASSERT_TRUE(c->Walk(0, 1, {"numbers"}).ok());
  ASSERT_TRUE(c->Lopen(1, kRdonly).ok());
  // 32 reads and getattrs sent back to back, none read yet.
  std::map<uint16_t, int> expect;  // tag -> number (or -1 for getattr)
  std::string wire;
  for (int i = 0; i < 32; ++i) {
    uint16_t tag = static_cast<uint16_t>(1000 + i);
    if (i % 4 == 3) {
      ASSERT_TRUE(Encode(tag, Tgetattr{.fid = 1, .request_mask = kGetattrAll}, &wire).ok());
      expect[tag] = -1;
    } else {
      ASSERT_TRUE(
          Encode(tag, Tread{.fid = 1, .offset = static_cast<uint64_t>(i) * 4, .count = 4}, &wire)
              .ok());
      expect[tag] = i;
    }
  }
  ASSERT_TRUE(c->SendRaw(wire).ok());
  for (int i = 0; i < 32; ++i) {
    auto r = c->Recv();
    ASSERT_TRUE(r.ok()) << r.status();
    auto it = expect.find(r->frame.tag);
    ASSERT_NE(it, expect.end()) << "unexpected or repeated tag " << r->frame.tag;
    if (it->second < 0) {
      ASSERT_NE(r->As<Rgetattr>(), nullptr);
      EXPECT_EQ(r->As<Rgetattr>()->size, content.size());
    } else {
      ASSERT_NE(r->As<Rread>(), nullptr) << Describe(r->frame.msg);
      EXPECT_EQ(r->As<Rread>()->data.bytes, fmt::format("{:04d}", it->second));
    }
    expect.erase(it);
  }
  EXPECT_TRUE(expect.empty());
}

TEST_P(ServerTest, InflightLimitStillAnswersEverything) {
  auto server = MakeServer({.workers = 1, .max_inflight_per_connection = 2});
  auto c = Connect(*server);
  ASSERT_TRUE(c->Version().ok());
  ASSERT_TRUE(c->Attach(0, "e").ok());
  std::string wire;
  for (uint16_t t = 1; t <= 200; ++t) {
    ASSERT_TRUE(Encode(t, Tgetattr{.fid = 0, .request_mask = kGetattrAll}, &wire).ok());
  }
  // A writer thread, so neither side's socket buffer can wedge the other.
  std::thread writer([&] { ASSERT_TRUE(c->SendRaw(wire).ok()); });
  std::set<uint16_t> got;
  for (int i = 0; i < 200; ++i) {
    auto r = c->Recv();
    ASSERT_TRUE(r.ok());
    ASSERT_NE(r->As<Rgetattr>(), nullptr);
    EXPECT_TRUE(got.insert(r->frame.tag).second);
  }
  writer.join();
  EXPECT_EQ(got.size(), 200u);
  c->Close();
  server->Shutdown();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

TEST_P(ServerTest, FlushNeverLetsTheOldReplyFollowRflush) {
  std::string big(1 << 20, 'b');
  WriteFile(exp_ + "/big", big);
  auto server = MakeServer({.workers = 1});
  auto c = Connect(*server);
  ASSERT_TRUE(c->Version().ok());
  ASSERT_TRUE(c->Attach(0, "e").ok());
  ASSERT_TRUE(c->Walk(0, 1, {"big"}).ok());
  ASSERT_TRUE(c->Lopen(1, kRdonly).ok());
  int answered_first = 0, dropped = 0;
  for (int round = 0; round < 50; ++round) {
    // A few slow reads ahead so that some flushed requests are still queued.
    std::string wire;
    for (uint16_t t = 10; t < 20; ++t) {
      ASSERT_TRUE(Encode(t, Tread{.fid = 1, .offset = 0, .count = 1 << 19}, &wire).ok());
    }
    ASSERT_TRUE(Encode(20, Tread{.fid = 1, .offset = 0, .count = 100}, &wire).ok());
    ASSERT_TRUE(Encode(21, Tflush{.oldtag = 20}, &wire).ok());
    ASSERT_TRUE(Encode(22, Tflush{.oldtag = 4242}, &wire).ok());  // unknown tag: Rflush
    ASSERT_TRUE(c->SendRaw(wire).ok());
    bool saw_old = false, saw_flush = false, saw_unknown = false;
    while (!(saw_flush && saw_unknown)) {
      auto r = c->Recv();
      ASSERT_TRUE(r.ok());
      uint16_t tag = r->frame.tag;
      if (tag == 20) {
        EXPECT_FALSE(saw_flush) << "the old reply came after Rflush";
        saw_old = true;
      } else if (tag == 21) {
        ASSERT_NE(r->As<Rflush>(), nullptr);
        saw_flush = true;
      } else if (tag == 22) {
        ASSERT_NE(r->As<Rflush>(), nullptr);
        saw_unknown = true;
      } else {
        ASSERT_NE(r->As<Rread>(), nullptr);
      }
    }
    // Nothing else may arrive for tag 20: the next reply is the marker's.
    ASSERT_TRUE(c->Send(30, Tclunk{.fid = 999}).ok());
    while (true) {
      auto r = c->Recv();
      ASSERT_TRUE(r.ok());
      if (r->frame.tag == 30) break;
      ASSERT_NE(r->frame.tag, 20) << "old reply after Rflush";
      // Only replies of this round's reads can still be on the way.
      ASSERT_TRUE(r->frame.tag >= 10 && r->frame.tag < 20) << r->frame.tag;
    }
    EXPECT_TRUE(saw_flush);
    EXPECT_TRUE(saw_unknown);
    (saw_old ? answered_first : dropped)++;
  }
  // Both outcomes are legal; print how they split.
  std::printf("flush: %d answered before Rflush, %d dropped\n", answered_first, dropped);

  // A request that is running when flushed (an fsync of dirty data takes a while) is
  // answered, and Rflush follows it; one still queued may be dropped instead. Either way the
  // fsync's reply never comes after Rflush.
  WriteFile(exp_ + "/dirty", std::string(16 << 20, 'd'));
  ASSERT_TRUE(c->Walk(0, 2, {"dirty"}).ok());
  ASSERT_TRUE(c->Lopen(2, kRdwr).ok());
  ASSERT_TRUE(c->Write(2, 0, std::string(512 << 10, 'e')).ok());
  ASSERT_TRUE(c->Send(40, Tfsync{.fid = 2, .datasync = 0}).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_TRUE(c->Send(41, Tflush{.oldtag = 40}).ok());
  bool fsync_answered = false;
  for (;;) {
    auto r = c->Recv();
    ASSERT_TRUE(r.ok());
    if (r->frame.tag == 41) {
      EXPECT_NE(r->As<Rflush>(), nullptr);
      break;
    }
    ASSERT_EQ(r->frame.tag, 40);
    EXPECT_NE(r->As<Rfsync>(), nullptr);
    fsync_answered = true;
  }
  ASSERT_TRUE(c->Send(42, Tclunk{.fid = 999}).ok());
  auto marker = c->Recv();
  ASSERT_TRUE(marker.ok());
  EXPECT_EQ(marker->frame.tag, 42) << "a reply came after Rflush";
  std::printf("flushed fsync: %s\n", fsync_answered ? "answered first" : "dropped");
  c->Close();
  server->Shutdown();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

TEST_P(ServerTest, GarbageClosesOnlyThatConnection) {
  auto good = Connect(*server_);
  ASSERT_TRUE(good->Version().ok());
  ASSERT_TRUE(good->Attach(0, "e").ok());
  for (std::string garbage :
       {std::string("\x03\x00\x00\x00", 4),                                  // size below 7
        std::string("\xff\xff\xff\x7f", 4),                                  // size above msize
        std::string("\x0c\x00\x00\x00\xc8\x01\x00junk", 12),                 // unknown type 200
        std::string("\x0b\x00\x00\x00\x6e\x01\x00\x01\x00\x00\x00", 11)}) {  // short Twalk
    auto bad = Connect(*server_);
    ASSERT_TRUE(bad->Version().ok());
    ASSERT_TRUE(bad->SendRaw(garbage).ok());
    auto r = bad->Recv();
    EXPECT_FALSE(r.ok()) << "connection stayed open after garbage";
    // The good connection still works.
    ASSERT_TRUE(good->Walk(0, 1, {"file"}).ok());
    auto a = good->Getattr(1);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->size, 11u);
    ASSERT_TRUE(good->Clunk(1).ok());
  }
}

TEST_P(ServerTest, LocksConflictBetweenConnections) {
  auto a = Connect(*server_);
  auto b = Connect(*server_);
  for (auto* c : {a.get(), b.get()}) {
    ASSERT_TRUE(c->Version().ok());
    ASSERT_TRUE(c->Attach(0, "e").ok());
    ASSERT_TRUE(c->Walk(0, 1, {"file"}).ok());
    ASSERT_TRUE(c->Lopen(1, kRdwr).ok());
  }
  EXPECT_EQ(a->Lock(1, kLockWrite, 0, 0).value(), kLockSuccess);
  EXPECT_EQ(b->Lock(1, kLockWrite, 0, 0).value(), kLockBlocked);
  // The holder's connection goes away: its locks go with it.
  a->Close();
  bool got = false;
  for (int i = 0; i < 500 && !got; ++i) {
    got = b->Lock(1, kLockWrite, 0, 0).value() == kLockSuccess;
    if (!got) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_TRUE(got);
}

TEST_P(ServerTest, ShutdownEndsEveryConnection) {
  auto server = MakeServer({});
  auto a = Connect(*server);
  auto b = Connect(*server);
  ASSERT_TRUE(a->Version().ok());
  ASSERT_TRUE(b->Version().ok());
  EXPECT_EQ(server->stats().connections_active, 2u);
  server->Shutdown();
  for (auto& t : threads_) t.join();  // every ServeConnection returned
  threads_.clear();
  EXPECT_EQ(server->stats().connections_active, 0u);
  EXPECT_FALSE(a->Recv().ok());
  // A connection after Shutdown is closed at once.
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  server->ServeConnection(sv[1], "late");
  char ch;
  EXPECT_EQ(::read(sv[0], &ch, 1), 0);
  ::close(sv[0]);
}

// A stream that is not a socket (a virtio-serial port is a character device): served the same,
// and Shutdown still ends it although shutdown(2) does not apply. A raw pty stands in.
TEST_P(ServerTest, ServesANonSocketStreamAndShutdownEndsIt) {
  int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  ASSERT_GE(master, 0);
  ASSERT_EQ(::grantpt(master), 0);
  ASSERT_EQ(::unlockpt(master), 0);
  int slave = ::open(::ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
  ASSERT_GE(slave, 0);
  struct termios t;
  ASSERT_EQ(::tcgetattr(slave, &t), 0);
  ::cfmakeraw(&t);
  ASSERT_EQ(::tcsetattr(slave, TCSANOW, &t), 0);
  ASSERT_EQ(::tcgetattr(master, &t), 0);
  ::cfmakeraw(&t);
  ASSERT_EQ(::tcsetattr(master, TCSANOW, &t), 0);
  auto server = MakeServer({});
  std::thread serve([&] { server->ServeConnection(master, "pty"); });
  struct Join {
    Server& s;
    std::thread& t;
    ~Join() {
      s.Shutdown();
      if (t.joinable()) t.join();
    }
  } join{*server, serve};
  StreamClient c(slave);
  ASSERT_TRUE(c.CallFor<Rversion>(Tversion{.msize = 8192, .version = "9P2000.L"}).ok());
  ASSERT_TRUE(c.Attach(0, "e").ok());
  ASSERT_TRUE(c.Walk(0, 1, {"file"}).ok());
  ASSERT_TRUE(c.Lopen(1, kRdonly).ok());
  EXPECT_EQ(c.Read(1, 0, 100).value(), "hello world");
  server->Shutdown();
  serve.join();  // returned although the fd is not a socket
  EXPECT_EQ(server->stats().connections_active, 0u);
}

TEST_P(ServerTest, DestroyingTheServerEndsConnections) {
  auto server = MakeServer({});
  auto a = Connect(*server);
  ASSERT_TRUE(a->Version().ok());
  ASSERT_TRUE(a->Attach(0, "e").ok());
  std::thread t = std::move(threads_.back());
  threads_.pop_back();
  server.reset();  // waits for ServeConnection to return
  t.join();
  EXPECT_FALSE(a->Recv().ok());
}

// ---- Node fd budget ------------------------------------------------------------------------

size_t OpenFdsOfThisProcess() { return CountOpenFds().value(); }

// What the Linux client does with cache=loose: a fid kept for every cached dentry. The server
// keeps node fds within its budget and every fid still answers.
TEST_P(ServerTest, FidsOnMoreFilesThanTheFdBudget) {
  auto cache = std::make_shared<NodeFdCache>(64);
  server_->Shutdown();
  server_ = MakeServer({.fd_cache = cache});
  ASSERT_EQ(::mkdir((exp_ + "/tree").c_str(), 0755), 0);
  constexpr uint32_t kFiles = 3000;
  for (uint32_t i = 0; i < kFiles; ++i) {
    WriteFile(exp_ + "/tree/" + std::to_string(i), std::to_string(i));
  }
  auto c = Attached();
  size_t before = OpenFdsOfThisProcess();
  for (uint32_t i = 0; i < kFiles; ++i) {
    ASSERT_TRUE(c->Walk(0, 100 + i, {"tree", std::to_string(i)}).ok()) << i;
  }
  EXPECT_LE(OpenFdsOfThisProcess(), before + 64 + 8);
  EXPECT_GT(cache->evictions(), kFiles - 64 - 1);
  for (uint32_t i = 0; i < kFiles; i += 7) {
    auto a = c->Getattr(100 + i);
    ASSERT_TRUE(a.ok()) << i << ": " << a.status();
    EXPECT_EQ(a->size, std::to_string(i).size());
    ASSERT_TRUE(c->Lopen(100 + i, O_RDONLY).ok()) << i;
    EXPECT_EQ(c->Read(100 + i, 0, 64).value(), std::to_string(i));
    ASSERT_TRUE(c->Clunk(100 + i).ok());
  }
  ASSERT_TRUE(c->Walk(0, 1, {"tree"}).ok());
  ASSERT_TRUE(c->Unlinkat(1, "1").ok());
  EXPECT_FALSE(Exists(exp_ + "/tree/1"));
  EXPECT_GT(cache->reopens(), 0u);
  EXPECT_LE(OpenFdsOfThisProcess(), before + 64 + 8);
}

}  // namespace
}  // namespace fun::p9

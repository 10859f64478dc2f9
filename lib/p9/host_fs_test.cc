#include "lib/p9/host_fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "lib/base/files.h"

namespace fun::p9 {
namespace {

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
  std::string tmpl = std::string(t != nullptr && *t != '\0' ? t : "/tmp") + "/p9fs-XXXXXX";
  char* d = ::mkdtemp(tmpl.data());
  EXPECT_NE(d, nullptr);
  return tmpl;
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream(path) << content;
}

std::string ReadAll(int fd) {
  std::string out;
  char buf[4096];
  off_t off = 0;
  while (true) {
    ssize_t n = ::pread(fd, buf, sizeof(buf), off);
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
    off += n;
  }
}

int ErrnoOf(const Status& s) { return s.sys_errno(); }

// Layout:
//   base/outside/secret           not exported
//   base/export/file              "hello"
//   base/export/sub/inner         "inner"
//   base/export/abs  -> /etc      absolute symlink out
//   base/export/rel  -> ../outside relative symlink out
//   base/export/dangle -> ../outside/created
class HostFsTest : public ::testing::TestWithParam<ResolverKind> {
 protected:
  void SetUp() override {
    base_ = TempRoot();
    exp_ = base_ + "/export";
    out_ = base_ + "/outside";
    ASSERT_EQ(::mkdir(exp_.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(out_.c_str(), 0755), 0);
    WriteFile(out_ + "/secret", "secret");
    WriteFile(exp_ + "/file", "hello");
    ASSERT_EQ(::mkdir((exp_ + "/sub").c_str(), 0755), 0);
    WriteFile(exp_ + "/sub/inner", "inner");
    ASSERT_EQ(::symlink("/etc", (exp_ + "/abs").c_str()), 0);
    ASSERT_EQ(::symlink("../outside", (exp_ + "/rel").c_str()), 0);
    ASSERT_EQ(::symlink("../outside/created", (exp_ + "/dangle").c_str()), 0);
    fs_ = Open({});
    root_ = fs_->Root().value();
  }
  void TearDown() override {
    fs_.reset();
    std::string cmd = "rm -rf '" + base_ + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }

  std::unique_ptr<HostFs> Open(HostFsOptions o) {
    o.resolver = GetParam();
    auto fs = HostFs::Open(exp_, o);
    EXPECT_TRUE(fs.ok()) << fs.status();
    return std::move(fs).value();
  }

  // Opens the export again with a node fd budget of its own, and returns the budget.
  std::shared_ptr<NodeFdCache> WithFdBudget(size_t max_fds) {
    auto cache = std::make_shared<NodeFdCache>(max_fds);
    fs_ = Open({.fd_cache = cache});
    root_ = fs_->Root().value();
    return cache;
  }

  std::shared_ptr<Node> WalkOk(const std::shared_ptr<Node>& from, const std::string& name) {
    auto n = fs_->Walk(from, name);
    EXPECT_TRUE(n.ok()) << name << ": " << n.status();
    return n.ok() ? *n : nullptr;
  }

  std::string base_, exp_, out_;
  std::unique_ptr<HostFs> fs_;
  std::shared_ptr<Node> root_;
};

INSTANTIATE_TEST_SUITE_P(Resolvers, HostFsTest, ::testing::ValuesIn(TestedResolvers()),
                         [](const auto& p) { return std::string(ResolverName(p.param)); });

TEST_P(HostFsTest, OpenRejectsMissingOrNonDirectory) {
  EXPECT_EQ(ErrnoOf(HostFs::Open(base_ + "/nope").status()), ENOENT);
  EXPECT_EQ(ErrnoOf(HostFs::Open(exp_ + "/file").status()), ENOTDIR);
  EXPECT_EQ(fs_->resolver_kind(), GetParam());
}

TEST_P(HostFsTest, WalkAndGetAttr) {
  auto f = WalkOk(root_, "file");
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(f->is_regular());
  EXPECT_EQ(f->path(), "file");
  auto a = fs_->GetAttr(*f);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->size, 5u);
  EXPECT_TRUE(S_ISREG(a->mode));
  EXPECT_EQ(a->qid.type, kQidFile);
  EXPECT_EQ(a->qid, f->qid());
  struct stat st;
  ASSERT_EQ(::stat((exp_ + "/file").c_str(), &st), 0);
  EXPECT_EQ(a->ino, st.st_ino);
  EXPECT_EQ(a->qid.path, st.st_ino);
  EXPECT_EQ(a->nlink, 1u);
  EXPECT_EQ(static_cast<time_t>(a->mtime.tv_sec), st.st_mtim.tv_sec);

  auto sub = WalkOk(root_, "sub");
  ASSERT_NE(sub, nullptr);
  EXPECT_EQ(sub->qid().type, kQidDir);
  auto inner = WalkOk(sub, "inner");
  ASSERT_NE(inner, nullptr);
  EXPECT_EQ(inner->path(), "sub/inner");

  EXPECT_EQ(ErrnoOf(fs_->Walk(root_, "missing").status()), ENOENT);
  EXPECT_EQ(ErrnoOf(fs_->Walk(f, "x").status()), ENOTDIR);
}

TEST_P(HostFsTest, BadNamesAreRefused) {
  for (std::string bad : {std::string("a/b"), std::string(""), std::string("x\0y", 3),
                          std::string("/etc"), std::string("sub/inner")}) {
    EXPECT_EQ(ErrnoOf(fs_->Walk(root_, bad).status()), EINVAL) << bad;
    EXPECT_EQ(ErrnoOf(fs_->Mkdir(*root_, bad, 0755, {}).status()), EINVAL) << bad;
    EXPECT_EQ(ErrnoOf(fs_->Create(*root_, bad, O_RDWR, 0644, {}).status()), EINVAL) << bad;
    EXPECT_EQ(ErrnoOf(fs_->UnlinkAt(*root_, bad, false)), EINVAL) << bad;
  }
  for (std::string dot : {".", ".."}) {
    EXPECT_EQ(ErrnoOf(fs_->Mkdir(*root_, dot, 0755, {}).status()), EEXIST);
    EXPECT_EQ(ErrnoOf(fs_->Create(*root_, dot, O_RDWR, 0644, {}).status()), EEXIST);
    EXPECT_EQ(ErrnoOf(fs_->Symlink(*root_, dot, "x", {}).status()), EEXIST);
    EXPECT_EQ(ErrnoOf(fs_->Mknod(*root_, dot, S_IFIFO | 0644, {}).status()), EEXIST);
    auto f = WalkOk(root_, "file");
    EXPECT_EQ(ErrnoOf(fs_->Link(*f, *root_, dot)), EEXIST);
    EXPECT_EQ(ErrnoOf(fs_->UnlinkAt(*root_, dot, true)), EINVAL);
    EXPECT_EQ(ErrnoOf(fs_->RenameAt(*root_, "file", *root_, dot)), EINVAL);
    EXPECT_EQ(ErrnoOf(fs_->RenameAt(*root_, dot, *root_, "x")), EINVAL);
    EXPECT_EQ(ErrnoOf(fs_->Rename(*f, *root_, dot)), EINVAL);
  }
  // Nothing was created or removed anywhere.
  struct stat st;
  EXPECT_EQ(::stat((exp_ + "/file").c_str(), &st), 0);
  EXPECT_NE(::stat((base_ + "/x").c_str(), &st), 0);
}

TEST_P(HostFsTest, DotAndDotDot) {
  auto same = WalkOk(root_, ".");
  EXPECT_EQ(same, root_);
  auto up = WalkOk(root_, "..");
  ASSERT_NE(up, nullptr);
  EXPECT_EQ(up->qid(), root_->qid());  // ".." of the root is the root
  auto up2 = WalkOk(up, "..");
  EXPECT_EQ(up2->qid(), root_->qid());
  auto sub = WalkOk(root_, "sub");
  auto back = WalkOk(sub, "..");
  EXPECT_EQ(back->qid(), root_->qid());
  EXPECT_EQ(back->path(), "");
}

TEST_P(HostFsTest, SymlinksAreNodesNeverFollowed) {
  for (const char* link : {"abs", "rel", "dangle"}) {
    auto l = WalkOk(root_, link);
    ASSERT_NE(l, nullptr);
    EXPECT_TRUE(l->is_symlink()) << link;
    EXPECT_EQ(l->qid().type, kQidSymlink);
    auto a = fs_->GetAttr(*l);
    ASSERT_TRUE(a.ok());
    EXPECT_TRUE(S_ISLNK(a->mode));
    // Walking through the link fails: it is not a directory to us.
    EXPECT_EQ(ErrnoOf(fs_->Walk(l, "passwd").status()), ENOTDIR);
    EXPECT_EQ(ErrnoOf(fs_->Walk(l, "secret").status()), ENOTDIR);
    EXPECT_EQ(ErrnoOf(fs_->Open(*l, O_RDONLY).status()), ELOOP);
    EXPECT_EQ(ErrnoOf(fs_->Open(*l, O_RDONLY | O_DIRECTORY).status()), ELOOP);
  }
  EXPECT_EQ(fs_->ReadLink(*WalkOk(root_, "abs")).value(), "/etc");
  EXPECT_EQ(fs_->ReadLink(*WalkOk(root_, "rel")).value(), "../outside");
  EXPECT_EQ(ErrnoOf(fs_->ReadLink(*WalkOk(root_, "file")).status()), EINVAL);
}

TEST_P(HostFsTest, NothingIsCreatedThroughASymlink) {
  // Without O_EXCL the existing symlink is found and refused (ELOOP); with it, EEXIST.
  EXPECT_EQ(ErrnoOf(fs_->Create(*root_, "dangle", O_RDWR, 0644, {}).status()), ELOOP);
  EXPECT_EQ(ErrnoOf(fs_->Create(*root_, "dangle", O_RDWR | O_EXCL, 0644, {}).status()), EEXIST);
  struct stat st;
  EXPECT_NE(::lstat((out_ + "/created").c_str(), &st), 0);
  // Creating inside a symlinked directory is not possible either.
  auto rel = WalkOk(root_, "rel");
  EXPECT_EQ(ErrnoOf(fs_->Create(*rel, "x", O_RDWR, 0644, {}).status()), ENOTDIR);
  EXPECT_EQ(ErrnoOf(fs_->Mkdir(*rel, "x", 0755, {}).status()), ENOTDIR);
  EXPECT_NE(::lstat((out_ + "/x").c_str(), &st), 0);
  // Setting attributes on a link never touches its target.
  auto abs = WalkOk(root_, "abs");
  EXPECT_EQ(ErrnoOf(fs_->SetAttr(*abs, {.mode = 0700})), EOPNOTSUPP);
  EXPECT_EQ(ErrnoOf(fs_->SetAttr(*abs, {.size = 0})), EINVAL);
  ASSERT_EQ(::stat("/etc", &st), 0);
  EXPECT_NE(st.st_mode & 07777, 0700u);
}

TEST_P(HostFsTest, DotDotNeverLeavesAfterTheDirectoryMovesOut) {
  ASSERT_EQ(::mkdir((exp_ + "/sub/deeper").c_str(), 0755), 0);
  auto sub = WalkOk(root_, "sub");
  auto deeper = WalkOk(sub, "deeper");
  ASSERT_NE(deeper, nullptr);
  // The host moves sub out of the export. openat(deeper, "..") would now be outside/sub.
  ASSERT_EQ(::rename((exp_ + "/sub").c_str(), (out_ + "/sub").c_str()), 0);
  auto up = fs_->Walk(deeper, "..");
  EXPECT_FALSE(up.ok());
  EXPECT_EQ(ErrnoOf(up.status()), ENOENT);
  // And a symlink put where sub was does not lead out either.
  ASSERT_EQ(::symlink("../outside/sub", (exp_ + "/sub").c_str()), 0);
  up = fs_->Walk(deeper, "..");
  EXPECT_FALSE(up.ok());
  EXPECT_TRUE(ErrnoOf(up.status()) == ELOOP || ErrnoOf(up.status()) == ENOTDIR) << up.status();
  // Remove by path meets the symlink, not the moved directory: nothing is removed.
  Status removed = fs_->Remove(*deeper);
  EXPECT_TRUE(ErrnoOf(removed) == ELOOP || ErrnoOf(removed) == ENOTDIR) << removed;
  struct stat st;
  EXPECT_EQ(::stat((out_ + "/sub/deeper").c_str(), &st), 0);
}

TEST_P(HostFsTest, RemoveChecksIdentity) {
  auto f = WalkOk(root_, "file");
  // The host replaces the file: the node no longer names what is at its path.
  ASSERT_EQ(::unlink((exp_ + "/file").c_str()), 0);
  WriteFile(exp_ + "/file", "other");
  EXPECT_EQ(ErrnoOf(fs_->Remove(*f)), ESTALE);
  struct stat st;
  EXPECT_EQ(::stat((exp_ + "/file").c_str(), &st), 0);
  EXPECT_EQ(ErrnoOf(fs_->Remove(*root_)), EBUSY);
}

TEST_P(HostFsTest, OpenReadWrite) {
  auto f = WalkOk(root_, "file");
  auto fd = fs_->Open(*f, O_RDWR);
  ASSERT_TRUE(fd.ok()) << fd.status();
  EXPECT_EQ(ReadAll(fd->get()), "hello");
  ASSERT_EQ(::pwrite(fd->get(), "J", 1, 0), 1);
  EXPECT_EQ(ReadAll(fd->get()), "Jello");
  auto t = fs_->Open(*f, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(ReadAll(fs_->Open(*f, O_RDONLY)->get()), "");
  EXPECT_EQ(ErrnoOf(fs_->Open(*root_, O_RDWR).status()), EISDIR);
  auto d = fs_->Open(*root_, O_RDONLY | O_DIRECTORY);
  EXPECT_TRUE(d.ok());
  EXPECT_EQ(ErrnoOf(fs_->Open(*f, O_RDONLY | O_DIRECTORY).status()), ENOTDIR);
}

TEST_P(HostFsTest, CreateAppliesModeExactlyAndOwner) {
  mode_t old = ::umask(077);
  auto c = fs_->Create(*root_, "new", O_RDWR, 0664, {.uid = 1234, .gid = 4321});
  ::umask(old);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(::pwrite(c->fd.get(), "abc", 3, 0), 3);
  struct stat st;
  ASSERT_EQ(::stat((exp_ + "/new").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0664u);
  EXPECT_EQ(st.st_size, 3);
  EXPECT_EQ(c->node->path(), "new");
  if (::geteuid() == 0) {
    EXPECT_TRUE(fs_->sets_owner());
    EXPECT_EQ(st.st_uid, 1234u);
    EXPECT_EQ(st.st_gid, 4321u);
  }
  EXPECT_EQ(ErrnoOf(fs_->Create(*root_, "new", O_RDWR | O_EXCL, 0644, {}).status()), EEXIST);
  // Without O_EXCL an existing file is opened.
  auto again = fs_->Create(*root_, "new", O_RDONLY, 0644, {});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(ReadAll(again->fd.get()), "abc");
}

TEST_P(HostFsTest, ServerUserPolicyIgnoresOwners) {
  auto fs = Open({.owner = OwnerPolicy::kServerUser});
  auto root = fs->Root().value();
  auto d = fs->Mkdir(*root, "mine", 0750, {.uid = 1234, .gid = 4321});
  ASSERT_TRUE(d.ok());
  struct stat st;
  ASSERT_EQ(::stat((exp_ + "/mine").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, ::geteuid());
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  // chown is ignored, and succeeds.
  EXPECT_TRUE(fs->SetAttr(**d, {.uid = 1234, .gid = 4321}).ok());
  ASSERT_EQ(::stat((exp_ + "/mine").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, ::geteuid());
}

TEST_P(HostFsTest, MkdirSymlinkMknod) {
  auto d = fs_->Mkdir(*root_, "d", 0700, {});
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE((*d)->is_dir());
  EXPECT_EQ(ErrnoOf(fs_->Mkdir(*root_, "d", 0700, {}).status()), EEXIST);
  auto l = fs_->Symlink(**d, "ln", "../../outside/secret", {});
  ASSERT_TRUE(l.ok());
  EXPECT_EQ((*l)->path(), "d/ln");
  EXPECT_EQ(fs_->ReadLink(**l).value(), "../../outside/secret");
  EXPECT_EQ(ErrnoOf(fs_->Symlink(*root_, "empty", "", {}).status()), ENOENT);
  auto fifo = fs_->Mknod(*root_, "fifo", S_IFIFO | 0600, {});
  ASSERT_TRUE(fifo.ok());
  EXPECT_EQ((*fifo)->type(), static_cast<uint32_t>(S_IFIFO));
  // Opening a FIFO never blocks a worker.
  auto ffd = fs_->Open(**fifo, O_RDONLY);
  EXPECT_TRUE(ffd.ok()) << ffd.status();
  auto sock = fs_->Mknod(*root_, "sock", S_IFSOCK | 0600, {});
  ASSERT_TRUE(sock.ok());
  EXPECT_EQ(ErrnoOf(fs_->Open(**sock, O_RDONLY).status()), ENXIO);
  auto reg = fs_->Mknod(*root_, "reg", 0640, {});
  ASSERT_TRUE(reg.ok());
  EXPECT_TRUE((*reg)->is_regular());
  EXPECT_EQ(ErrnoOf(fs_->Mknod(*root_, "chr", S_IFCHR | 0600, {}).status()), EPERM);
  EXPECT_EQ(ErrnoOf(fs_->Mknod(*root_, "blk", S_IFBLK | 0600, {}).status()), EPERM);
  struct stat st;
  EXPECT_NE(::lstat((exp_ + "/chr").c_str(), &st), 0);
}

TEST_P(HostFsTest, LinkRenameUnlink) {
  auto f = WalkOk(root_, "file");
  ASSERT_TRUE(fs_->Link(*f, *root_, "hard").ok());
  struct stat st;
  ASSERT_EQ(::stat((exp_ + "/hard").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 2u);
  EXPECT_EQ(ErrnoOf(fs_->Link(*f, *root_, "hard")), EEXIST);
  auto sub = WalkOk(root_, "sub");
  EXPECT_EQ(ErrnoOf(fs_->Link(*sub, *root_, "subl")), EPERM);
  // A link to a symlink is a link to the symlink itself.
  auto abs = WalkOk(root_, "abs");
  ASSERT_TRUE(fs_->Link(*abs, *root_, "abs2").ok());
  ASSERT_EQ(::lstat((exp_ + "/abs2").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));

  ASSERT_TRUE(fs_->RenameAt(*root_, "hard", *sub, "moved").ok());
  EXPECT_EQ(::stat((exp_ + "/sub/moved").c_str(), &st), 0);
  ASSERT_TRUE(fs_->Rename(*f, *sub, "file2").ok());
  EXPECT_EQ(::stat((exp_ + "/sub/file2").c_str(), &st), 0);
  EXPECT_EQ(ErrnoOf(fs_->RenameAt(*root_, "missing", *root_, "x")), ENOENT);

  EXPECT_EQ(ErrnoOf(fs_->UnlinkAt(*root_, "sub", true)), ENOTEMPTY);
  EXPECT_EQ(ErrnoOf(fs_->UnlinkAt(*root_, "sub", false)), EISDIR);
  EXPECT_EQ(ErrnoOf(fs_->UnlinkAt(*sub, "moved", true)), ENOTDIR);
  EXPECT_TRUE(fs_->UnlinkAt(*sub, "moved", false).ok());
  EXPECT_EQ(ErrnoOf(fs_->UnlinkAt(*sub, "moved", false)), ENOENT);
  // Remove by node, after the node's path was updated as the server does on rename.
  f->set_path("sub/file2");
  EXPECT_TRUE(fs_->Remove(*f).ok());
  EXPECT_NE(::stat((exp_ + "/sub/file2").c_str(), &st), 0);
}

TEST_P(HostFsTest, SetAttr) {
  auto f = WalkOk(root_, "file");
  ASSERT_TRUE(fs_->SetAttr(*f, {.mode = 0600}).ok());
  ASSERT_TRUE(fs_->SetAttr(*f, {.size = 2}).ok());
  timespec t{1000000000, 123};
  ASSERT_TRUE(fs_->SetAttr(*f, {.atime = t, .mtime = {0, UTIME_OMIT}}).ok());
  struct stat st;
  ASSERT_EQ(::stat((exp_ + "/file").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_size, 2);
  EXPECT_EQ(st.st_atim.tv_sec, 1000000000);
  EXPECT_EQ(st.st_atim.tv_nsec, 123);
  timespec before = st.st_mtim;
  ASSERT_TRUE(fs_->SetAttr(*f, {.mtime = {0, UTIME_NOW}}).ok());
  ASSERT_EQ(::stat((exp_ + "/file").c_str(), &st), 0);
  EXPECT_GE(st.st_mtim.tv_sec, before.tv_sec);
  EXPECT_EQ(st.st_atim.tv_sec, 1000000000);  // omitted: unchanged
  if (fs_->sets_owner()) {
    ASSERT_TRUE(fs_->SetAttr(*f, {.uid = 77, .gid = 88}).ok());
    ASSERT_EQ(::stat((exp_ + "/file").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 77u);
    EXPECT_EQ(st.st_gid, 88u);
  }
  auto sub = WalkOk(root_, "sub");
  EXPECT_EQ(ErrnoOf(fs_->SetAttr(*sub, {.size = 0})), EISDIR);
  ASSERT_TRUE(fs_->SetAttr(*sub, {.mode = 0711}).ok());
  ASSERT_EQ(::stat((exp_ + "/sub").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0711u);
}

TEST_P(HostFsTest, ReadOnlyExportRefusesEveryChange) {
  auto fs = Open({.read_only = true});
  auto root = fs->Root().value();
  auto f = fs->Walk(root, "file").value();
  auto sub = fs->Walk(root, "sub").value();
  EXPECT_EQ(ErrnoOf(fs->Open(*f, O_WRONLY).status()), EROFS);
  EXPECT_EQ(ErrnoOf(fs->Open(*f, O_RDWR).status()), EROFS);
  EXPECT_EQ(ErrnoOf(fs->Open(*f, O_RDONLY | O_TRUNC).status()), EROFS);
  EXPECT_TRUE(fs->Open(*f, O_RDONLY).ok());
  EXPECT_EQ(ErrnoOf(fs->Create(*root, "n", O_RDWR, 0644, {}).status()), EROFS);
  EXPECT_EQ(ErrnoOf(fs->Mkdir(*root, "n", 0755, {}).status()), EROFS);
  EXPECT_EQ(ErrnoOf(fs->Symlink(*root, "n", "t", {}).status()), EROFS);
  EXPECT_EQ(ErrnoOf(fs->Mknod(*root, "n", S_IFIFO | 0644, {}).status()), EROFS);
  EXPECT_EQ(ErrnoOf(fs->Link(*f, *root, "n")), EROFS);
  EXPECT_EQ(ErrnoOf(fs->Rename(*f, *root, "n")), EROFS);
  EXPECT_EQ(ErrnoOf(fs->RenameAt(*root, "file", *root, "n")), EROFS);
  EXPECT_EQ(ErrnoOf(fs->UnlinkAt(*root, "file", false)), EROFS);
  EXPECT_EQ(ErrnoOf(fs->UnlinkAt(*sub, "inner", false)), EROFS);
  EXPECT_EQ(ErrnoOf(fs->Remove(*f)), EROFS);
  EXPECT_EQ(ErrnoOf(fs->SetAttr(*f, {.mode = 0600})), EROFS);
  EXPECT_EQ(ErrnoOf(fs->SetXattr(*f, "user.x", "v", 0)), EROFS);
  EXPECT_EQ(ErrnoOf(fs->RemoveXattr(*f, "user.x")), EROFS);
  EXPECT_TRUE(fs->GetAttr(*f).ok());
  struct stat st;
  ASSERT_EQ(::stat((exp_ + "/file").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 5);
}

TEST_P(HostFsTest, Xattrs) {
  auto f = WalkOk(root_, "file");
  Status s = fs_->SetXattr(*f, "user.color", "blue", 0);
  if (ErrnoOf(s) == EOPNOTSUPP) GTEST_SKIP() << "no user xattrs on this file system";
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(fs_->GetXattr(*f, "user.color").value(), "blue");
  std::string big(2000, 'x');  // > the 256-byte first guess; ext4 caps values at a block
  ASSERT_TRUE(fs_->SetXattr(*f, "user.big", big, 0).ok());
  EXPECT_EQ(fs_->GetXattr(*f, "user.big").value(), big);
  EXPECT_EQ(ErrnoOf(fs_->SetXattr(*f, "user.color", "red", XATTR_CREATE)), EEXIST);
  auto list = fs_->ListXattr(*f);
  ASSERT_TRUE(list.ok());
  EXPECT_NE(list->find(std::string("user.color\0", 11)), std::string::npos);
  EXPECT_EQ(ErrnoOf(fs_->GetXattr(*f, "user.none").status()), ENODATA);
  // Other namespaces: never written, read as absent.
  EXPECT_EQ(ErrnoOf(fs_->SetXattr(*f, "security.capability", "x", 0)), EOPNOTSUPP);
  EXPECT_EQ(ErrnoOf(fs_->SetXattr(*f, "trusted.x", "x", 0)), EOPNOTSUPP);
  EXPECT_EQ(ErrnoOf(fs_->GetXattr(*f, "security.capability").status()), ENODATA);
  ASSERT_TRUE(fs_->RemoveXattr(*f, "user.color").ok());
  EXPECT_EQ(ErrnoOf(fs_->GetXattr(*f, "user.color").status()), ENODATA);
  // On a directory too.
  ASSERT_TRUE(fs_->SetXattr(*root_, "user.d", "1", 0).ok());
  EXPECT_EQ(fs_->GetXattr(*root_, "user.d").value(), "1");
  // Symlinks: nothing.
  auto abs = WalkOk(root_, "abs");
  EXPECT_EQ(ErrnoOf(fs_->GetXattr(*abs, "user.x").status()), ENODATA);
  EXPECT_EQ(fs_->ListXattr(*abs).value(), "");
}

TEST_P(HostFsTest, OfdLocksConflictBetweenOpens) {
  auto f = WalkOk(root_, "file");
  auto a = fs_->Open(*f, O_RDWR).value();
  auto b = fs_->Open(*f, O_RDWR).value();
  HostFs::LockRange w{.type = kLockWrite, .start = 0, .length = 10};
  EXPECT_EQ(HostFs::SetLock(a.get(), w).value(), kLockSuccess);
  EXPECT_EQ(HostFs::SetLock(b.get(), w).value(), kLockBlocked);
  EXPECT_EQ(HostFs::SetLock(b.get(), {.type = kLockRead, .start = 5, .length = 1}).value(),
            kLockBlocked);
  EXPECT_EQ(HostFs::SetLock(b.get(), {.type = kLockWrite, .start = 10, .length = 5}).value(),
            kLockSuccess);
  auto held = HostFs::GetLock(b.get(), {.type = kLockWrite, .start = 0, .length = 0}).value();
  EXPECT_EQ(held.type, kLockWrite);
  EXPECT_EQ(held.start, 0u);
  EXPECT_EQ(held.length, 10u);
  EXPECT_EQ(HostFs::SetLock(a.get(), {.type = kLockUnlock, .start = 0, .length = 10}).value(),
            kLockSuccess);
  EXPECT_EQ(HostFs::SetLock(b.get(), w).value(), kLockSuccess);
  auto none = HostFs::GetLock(b.get(), {.type = kLockWrite, .start = 0, .length = 0}).value();
  EXPECT_EQ(none.type, kLockUnlock);
  // Closing the holder's open file releases its locks (ReleaseLocks first, as the server does:
  // the in-process lock table of the portable build cannot see a close).
  HostFs::ReleaseLocks(b.get());
  b.reset();
  EXPECT_EQ(HostFs::SetLock(a.get(), w).value(), kLockSuccess);
  EXPECT_EQ(ErrnoOf(HostFs::SetLock(a.get(), {.type = 7}).status()), EINVAL);
  HostFs::ReleaseLocks(a.get());
}

TEST_P(HostFsTest, LocksFollowTheOpenModeAndRanges) {
  auto f = WalkOk(root_, "file");
  auto r = fs_->Open(*f, O_RDONLY).value();
  auto w = fs_->Open(*f, O_WRONLY).value();
  auto rw = fs_->Open(*f, O_RDWR).value();
  // As fcntl: a write lock needs an fd open for writing, a read lock one open for reading.
  EXPECT_EQ(ErrnoOf(HostFs::SetLock(r.get(), {.type = kLockWrite}).status()), EBADF);
  EXPECT_EQ(ErrnoOf(HostFs::SetLock(w.get(), {.type = kLockRead}).status()), EBADF);
  EXPECT_EQ(
      ErrnoOf(HostFs::SetLock(rw.get(), {.type = kLockWrite, .start = uint64_t{1} << 63}).status()),
      EINVAL);
  // Read locks share; a write lock over them is refused, and GETLOCK names one of them.
  EXPECT_EQ(HostFs::SetLock(r.get(), {.type = kLockRead, .start = 0, .length = 100}).value(),
            kLockSuccess);
  EXPECT_EQ(HostFs::SetLock(rw.get(), {.type = kLockRead, .start = 50, .length = 0}).value(),
            kLockSuccess);
  EXPECT_EQ(HostFs::SetLock(w.get(), {.type = kLockWrite, .start = 99, .length = 1}).value(),
            kLockBlocked);
  auto held = HostFs::GetLock(w.get(), {.type = kLockWrite, .start = 0, .length = 0}).value();
  EXPECT_EQ(held.type, kLockRead);
  // Unlocking the middle of rw's lock leaves both ends.
  EXPECT_EQ(HostFs::SetLock(rw.get(), {.type = kLockUnlock, .start = 200, .length = 100}).value(),
            kLockSuccess);
  EXPECT_EQ(HostFs::SetLock(w.get(), {.type = kLockWrite, .start = 200, .length = 100}).value(),
            kLockSuccess);
  EXPECT_EQ(HostFs::SetLock(w.get(), {.type = kLockWrite, .start = 300, .length = 1}).value(),
            kLockBlocked);
  EXPECT_EQ(HostFs::SetLock(w.get(), {.type = kLockWrite, .start = 150, .length = 1}).value(),
            kLockBlocked);
  for (int fd : {r.get(), w.get(), rw.get()}) HostFs::ReleaseLocks(fd);
}

// Runs `body` where permission bits apply: in a child process with the ids of nobody when the
// tests run as root (after handing `tree` to nobody), else right here. Returns what `body`
// reported: "" when everything held.
std::string AsOrdinaryUser(const std::string& base, const std::string& tree,
                           const std::function<std::string()>& body) {
  if (::geteuid() != 0) return body();
  constexpr uid_t kNobody = 65534;
  if (::chmod(base.c_str(), 0755) != 0) return "chmod base";
  std::string cmd = "chown -R 65534:65534 '" + tree + "'";
  if (std::system(cmd.c_str()) != 0) return "chown tree";
  int p[2];
  if (::pipe(p) != 0) return "pipe";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    std::string err;
    if (::setgroups(0, nullptr) != 0 || ::setresgid(kNobody, kNobody, kNobody) != 0 ||
        ::setresuid(kNobody, kNobody, kNobody) != 0) {
      err = "dropping to nobody failed";
    } else {
      err = body();
    }
    if (!err.empty()) (void)!::write(p[1], err.data(), err.size());
    ::_exit(0);
  }
  ::close(p[1]);
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) out += " (child crashed)";
  return out;
}

#define CHECK_OR_SAY(cond)                      \
  do {                                          \
    if (!(cond)) errs += "failed: " #cond "\n"; \
  } while (0)

// A file or directory its owner may not read still has attributes, and its owner may change
// them (without O_PATH this is a node without an fd, acted on through its parent).
TEST_P(HostFsTest, UnreadableFileAndDirectoryStillHaveAttributes) {
  WriteFile(exp_ + "/locked", "x");
  ASSERT_EQ(::mkdir((exp_ + "/closed").c_str(), 0755), 0);
  WriteFile(exp_ + "/closed/in", "");
  std::string report = AsOrdinaryUser(base_, exp_, [&]() -> std::string {
    std::string errs;
    if (::chmod((exp_ + "/locked").c_str(), 0) != 0 || ::chmod((exp_ + "/closed").c_str(), 0)) {
      return "chmod 0";
    }
    auto fs = HostFs::Open(exp_, {.resolver = GetParam(), .owner = OwnerPolicy::kServerUser});
    if (!fs.ok()) return "open export";
    auto root = (*fs)->Root().value();
    auto f = (*fs)->Walk(root, "locked");
    if (!f.ok()) return "walk locked";
#ifdef FUN_P9_PORTABLE_NODES
    CHECK_OR_SAY(!(*f)->has_fd());
#endif
    auto a = (*fs)->GetAttr(**f);
    CHECK_OR_SAY(a.ok() && S_ISREG(a->mode) && (a->mode & 07777) == 0 && a->size == 1);
    CHECK_OR_SAY(ErrnoOf((*fs)->Open(**f, O_RDONLY).status()) == EACCES);
    CHECK_OR_SAY(ErrnoOf((*fs)->GetXattr(**f, "user.x").status()) == EACCES);
    CHECK_OR_SAY((*fs)->StatFs(**f).ok());
    timespec t{1000000000, 7};
    CHECK_OR_SAY((*fs)->SetAttr(**f, {.atime = t, .mtime = t}).ok());
    CHECK_OR_SAY((*fs)->SetAttr(**f, {.mode = 0600}).ok());
    struct stat st;
    CHECK_OR_SAY(::stat((exp_ + "/locked").c_str(), &st) == 0 && (st.st_mode & 07777) == 0600 &&
                 st.st_mtim.tv_sec == 1000000000 && st.st_mtim.tv_nsec == 7);
    CHECK_OR_SAY((*fs)->Open(**f, O_RDONLY).ok());
    CHECK_OR_SAY((*fs)->Rename(**f, *root, "locked2").ok());

    auto d = (*fs)->Walk(root, "closed");
    if (!d.ok()) return errs + "walk closed";
    a = (*fs)->GetAttr(**d);
    CHECK_OR_SAY(a.ok() && S_ISDIR(a->mode) && (a->mode & 07777) == 0);
    CHECK_OR_SAY(ErrnoOf((*fs)->Walk(*d, "in").status()) == EACCES);
    CHECK_OR_SAY(ErrnoOf((*fs)->Mkdir(**d, "n", 0755, {}).status()) == EACCES);
    CHECK_OR_SAY((*fs)->SetAttr(**d, {.mode = 0755}).ok());
    // A new walk sees inside now.
    auto d2 = (*fs)->Walk(root, "closed");
    CHECK_OR_SAY(d2.ok() && (*fs)->Walk(*d2, "in").ok());
    return errs;
  });
  EXPECT_EQ(report, "");
}

// FIFOs and symlinks are never opened to be held: attributes, times and names still work.
TEST_P(HostFsTest, SpecialFilesKeepTheirAttributes) {
  auto fifo = fs_->Mknod(*root_, "fifo", S_IFIFO | 0600, {});
  ASSERT_TRUE(fifo.ok()) << fifo.status();
  auto a = fs_->GetAttr(**fifo);
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(S_ISFIFO(a->mode));
  EXPECT_EQ(a->qid, (*fifo)->qid());
  ASSERT_TRUE(fs_->SetAttr(**fifo, {.mode = 0640}).ok());
  timespec t{1000000000, 5};
  ASSERT_TRUE(fs_->SetAttr(**fifo, {.atime = t, .mtime = t}).ok());
  struct stat st;
  ASSERT_EQ(::lstat((exp_ + "/fifo").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_mtim.tv_nsec, 5);
  // User xattrs are for files and directories only (what Linux answers for a FIFO).
  EXPECT_EQ(ErrnoOf(fs_->GetXattr(**fifo, "user.x").status()), ENODATA);
  EXPECT_EQ(ErrnoOf(fs_->SetXattr(**fifo, "user.x", "v", 0)), EPERM);
  EXPECT_TRUE(fs_->StatFs(**fifo).ok());

  // A symlink's own times change, never its target's.
  auto l = WalkOk(root_, "rel");
  struct stat out_before;
  ASSERT_EQ(::stat(out_.c_str(), &out_before), 0);
  ASSERT_TRUE(fs_->SetAttr(*l, {.atime = t, .mtime = t}).ok());
  ASSERT_EQ(::lstat((exp_ + "/rel").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 1000000000);
  struct stat out_after;
  ASSERT_EQ(::stat(out_.c_str(), &out_after), 0);
  EXPECT_EQ(out_after.st_mtim.tv_sec, out_before.st_mtim.tv_sec);
  EXPECT_EQ(out_after.st_mtim.tv_nsec, out_before.st_mtim.tv_nsec);

  // After the client renames a symlink (the server updates its recorded path), it still works.
  auto sub = WalkOk(root_, "sub");
  ASSERT_TRUE(fs_->Rename(*l, *sub, "rel2").ok());
  l->set_path("sub/rel2");
  EXPECT_EQ(fs_->ReadLink(*l).value(), "../outside");
  EXPECT_TRUE(fs_->GetAttr(*l).ok());
  ASSERT_TRUE(fs_->Link(*l, *root_, "rel3").ok());
  ASSERT_EQ(::lstat((exp_ + "/rel3").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_TRUE(fs_->Remove(*l).ok());
  EXPECT_NE(::lstat((exp_ + "/sub/rel2").c_str(), &st), 0);
}

// What a node follows when the HOST replaces its entry: with O_PATH the object it was made on,
// without (macOS, the portable build) its name, checked to still be that object. Both are safe;
// they legitimately differ.
TEST_P(HostFsTest, HostReplacingASymlinkUnderANode) {
  auto l = WalkOk(root_, "abs");
  // Made before the old one goes, so it cannot reuse its inode number.
  ASSERT_EQ(::symlink("/other", (exp_ + "/abs.new").c_str()), 0);
  ASSERT_EQ(::rename((exp_ + "/abs.new").c_str(), (exp_ + "/abs").c_str()), 0);
  auto target = fs_->ReadLink(*l);
#ifdef FUN_P9_PORTABLE_NODES
  EXPECT_EQ(ErrnoOf(target.status()), ESTALE);
#else
  ASSERT_TRUE(target.ok());
  EXPECT_EQ(*target, "/etc");
#endif
  EXPECT_EQ(fs_->ReadLink(*WalkOk(root_, "abs")).value(), "/other");
}

std::set<std::string> ListWithReader(HostFs& fs, const Node& dir, DirReader& reader, uint32_t max,
                                     size_t* calls) {
  std::set<std::string> names;
  uint64_t offset = 0;
  *calls = 0;
  while (true) {
    std::string buf;
    DirentWriter w(&buf, max);
    Status s = fs.ReadDir(dir, reader, offset, w);
    EXPECT_TRUE(s.ok()) << s;
    ++*calls;
    auto ents = ParseDirents(buf);
    EXPECT_TRUE(ents.ok());
    if (!s.ok() || ents->empty()) return names;
    for (const auto& e : *ents) EXPECT_TRUE(names.insert(e.name).second) << "twice: " << e.name;
    offset = ents->back().offset;
  }
}

TEST_P(HostFsTest, ReadDirResumesAtOffsets) {
  for (int i = 0; i < 300; ++i) WriteFile(exp_ + "/sub/f" + std::to_string(i), "");
  auto sub = WalkOk(root_, "sub");
  auto reader = fs_->NewDirReader(fs_->Open(*sub, O_RDONLY | O_DIRECTORY).value());
  size_t calls = 0;
  auto names = ListWithReader(*fs_, *sub, *reader, 512, &calls);
  EXPECT_EQ(names.size(), 300u + 3u);  // . .. inner f0..f299
  EXPECT_TRUE(names.count("."));
  EXPECT_TRUE(names.count(".."));
  EXPECT_TRUE(names.count("inner"));
  EXPECT_GT(calls, 10u);
  // Listing again from 0 (a rewind) gives the same entries.
  auto again = ListWithReader(*fs_, *sub, *reader, 4096, &calls);
  EXPECT_EQ(again, names);
  // A count too small for one entry is an error, not an empty (end-of-directory) reply.
  std::string buf;
  DirentWriter tiny(&buf, 10);
  EXPECT_EQ(ErrnoOf(fs_->ReadDir(*sub, *reader, 0, tiny)), EINVAL);
}

TEST_P(HostFsTest, ReadDirOfRootReportsRootForDotDot) {
  auto reader = fs_->NewDirReader(fs_->Open(*root_, O_RDONLY | O_DIRECTORY).value());
  std::string buf;
  DirentWriter w(&buf, 65536);
  ASSERT_TRUE(fs_->ReadDir(*root_, *reader, 0, w).ok());
  auto ents = ParseDirents(buf).value();
  bool saw = false;
  for (const auto& e : ents) {
    if (e.name == "..") {
      saw = true;
      EXPECT_EQ(e.qid, root_->qid());
    }
    if (e.name == "sub") {
      EXPECT_EQ(e.qid.type, kQidDir);
      EXPECT_EQ(e.type, DT_DIR);
    }
    if (e.name == "abs") {
      EXPECT_EQ(e.qid.type, kQidSymlink);
    }
  }
  EXPECT_TRUE(saw);
}

TEST_P(HostFsTest, StatFs) {
  auto s = fs_->StatFs(*root_);
  ASSERT_TRUE(s.ok());
  EXPECT_GT(s->bsize, 0u);
  EXPECT_GT(s->blocks, 0u);
  EXPECT_GT(s->namelen, 0u);
}

// A host process swaps a directory for a symlink to the outside as fast as it can while the
// server resolves paths through it: no fd ever lands outside the export.
TEST_P(HostFsTest, ConcurrentSymlinkSwapNeverEscapes) {
  ASSERT_EQ(::mkdir((exp_ + "/sub/deeper").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((out_ + "/deeper").c_str(), 0755), 0);
  WriteFile(out_ + "/deeper/marker", "");
  auto sub = WalkOk(root_, "sub");
  auto deeper = WalkOk(sub, "deeper");
  auto d2 = fs_->Mkdir(*deeper, "d2", 0755, {});
  ASSERT_TRUE(d2.ok());
  struct stat outside_st;
  ASSERT_EQ(::stat((out_ + "/deeper").c_str(), &outside_st), 0);
  std::atomic<bool> stop{false};
  std::thread swapper([&] {
    std::string real = exp_ + "/sub", aside = exp_ + "/sub.real", link = exp_ + "/sub.link";
    ::symlink(out_.c_str(), link.c_str());
    while (!stop) {
      ::rename(real.c_str(), aside.c_str());
      ::rename(link.c_str(), real.c_str());  // sub -> outside
      ::rename(real.c_str(), link.c_str());
      ::rename(aside.c_str(), real.c_str());
    }
  });
  int escaped = 0;
  for (int i = 0; i < 3000; ++i) {
    auto up = fs_->Walk(*d2, "..");  // resolves "sub/deeper" from the root
    if (up.ok() && (*up)->dev() == outside_st.st_dev && (*up)->ino() == outside_st.st_ino) {
      ++escaped;
    }
  }
  stop = true;
  swapper.join();
  EXPECT_EQ(escaped, 0);
}

// ---- Node fd budget (NodeFdCache) ----

size_t OpenFdsOfThisProcess() { return CountOpenFds().value(); }

TEST_P(HostFsTest, EvictedNodesWorkAsBefore) {
  auto cache = WithFdBudget(2);
  auto file = WalkOk(root_, "file");
  auto sub = WalkOk(root_, "sub");
  auto inner = WalkOk(sub, "inner");
  auto abs = WalkOk(root_, "abs");
  std::vector<std::shared_ptr<Node>> others;
  for (int i = 0; i < 6; ++i) {
    WriteFile(exp_ + "/f" + std::to_string(i), "x");
    others.push_back(WalkOk(root_, "f" + std::to_string(i)));
  }
  ASSERT_TRUE(file && sub && inner && abs);
  EXPECT_LE(cache->open_fds(), 2u);
  EXPECT_GE(cache->evictions(), 7u);  // 9 nodes with fds (the symlink has none without O_PATH)
  EXPECT_FALSE(file->fd_open());
  EXPECT_FALSE(sub->fd_open());

  // Each call on an evicted node opens its fd again and acts on the same object.
  struct stat st;
  ASSERT_EQ(::stat((exp_ + "/file").c_str(), &st), 0);
  auto a = fs_->GetAttr(*file);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->ino, st.st_ino);
  EXPECT_EQ(a->size, 5u);
  EXPECT_GE(cache->reopens(), 1u);
  auto fd = fs_->Open(*file, O_RDONLY);
  ASSERT_TRUE(fd.ok()) << fd.status();
  EXPECT_EQ(ReadAll(fd->get()), "hello");
  EXPECT_EQ(ReadAll(fs_->Open(*inner, O_RDONLY).value().get()), "inner");
  EXPECT_EQ(fs_->ReadLink(*abs).value(), "/etc");

  // Directories: walked from, created in, listed.
  for (auto& n : others) ASSERT_TRUE(fs_->GetAttr(*n).ok());  // evicts sub again
  EXPECT_FALSE(sub->fd_open());
  EXPECT_EQ(ReadAll(fs_->Open(*WalkOk(sub, "inner"), O_RDONLY).value().get()), "inner");
  for (auto& n : others) ASSERT_TRUE(fs_->GetAttr(*n).ok());
  auto created = fs_->Create(*sub, "new", O_RDWR, 0640, {});
  ASSERT_TRUE(created.ok()) << created.status();
  for (auto& n : others) ASSERT_TRUE(fs_->GetAttr(*n).ok());
  ASSERT_TRUE(fs_->Mkdir(*sub, "dir", 0750, {}).ok());
  auto dirfd = fs_->Open(*sub, O_RDONLY | O_DIRECTORY);
  ASSERT_TRUE(dirfd.ok()) << dirfd.status();

  // Changes on evicted nodes.
  for (auto& n : others) ASSERT_TRUE(fs_->GetAttr(*n).ok());
  SetAttrRequest chmod;
  chmod.mode = 0600;
  ASSERT_TRUE(fs_->SetAttr(*file, chmod).ok());
  ASSERT_EQ(::stat((exp_ + "/file").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  for (auto& n : others) ASSERT_TRUE(fs_->GetAttr(*n).ok());
  ASSERT_TRUE(fs_->Link(*file, *sub, "hard").ok());
  ASSERT_EQ(::stat((exp_ + "/sub/hard").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 2u);

  // A rename by the client updates the recorded path: the node is found again at its new name.
  ASSERT_TRUE(fs_->Rename(*file, *sub, "moved").ok());
  file->set_path(HostFs::ChildPath(*sub, "moved"));
  for (auto& n : others) ASSERT_TRUE(fs_->GetAttr(*n).ok());
  EXPECT_FALSE(file->fd_open());
  EXPECT_EQ(fs_->GetAttr(*file).value().size, 5u);
  for (auto& n : others) ASSERT_TRUE(fs_->GetAttr(*n).ok());
  ASSERT_TRUE(fs_->Remove(*file).ok());
  EXPECT_NE(::access((exp_ + "/sub/moved").c_str(), F_OK), 0);
  EXPECT_LE(cache->open_fds(), 2u);
}

TEST_P(HostFsTest, EvictedNodeChangedOnTheHostIsNotConfusedWithAnother) {
  auto cache = WithFdBudget(1);
  auto file = WalkOk(root_, "file");
  auto sub = WalkOk(root_, "sub");
  auto inner = WalkOk(sub, "inner");  // evicts file, then sub
  ASSERT_TRUE(file && sub && inner);
  ASSERT_FALSE(file->fd_open());
  // Replaced by another file of the same name: ESTALE, never the other file.
  ASSERT_EQ(::rename((exp_ + "/file").c_str(), (exp_ + "/aside").c_str()), 0);
  WriteFile(exp_ + "/file", "impostor");
  EXPECT_EQ(ErrnoOf(fs_->GetAttr(*file).status()), ESTALE);
  EXPECT_EQ(ErrnoOf(fs_->Open(*file, O_RDONLY).status()), ESTALE);
  // Gone: the call fails, it does not reach anything else.
  ASSERT_EQ(::rename((exp_ + "/sub").c_str(), (exp_ + "/sub2").c_str()), 0);
  ASSERT_TRUE(fs_->GetAttr(*inner).ok());  // inner still holds its fd
  EXPECT_FALSE(sub->fd_open());
  EXPECT_EQ(ErrnoOf(fs_->Walk(sub, "inner").status()), ENOENT);
  // A symlink put where an evicted directory was is not followed.
  ASSERT_EQ(::symlink("../outside", (exp_ + "/sub").c_str()), 0);
  auto through = fs_->Walk(sub, "secret");
  EXPECT_FALSE(through.ok());
  auto escaped = fs_->Create(*sub, "created", O_RDWR, 0644, {});
  EXPECT_FALSE(escaped.ok());
  EXPECT_NE(::access((out_ + "/created").c_str(), F_OK), 0);
}

TEST_P(HostFsTest, NodeFdCacheEvictsTheLeastRecentlyUsed) {
  auto cache = WithFdBudget(2);
  auto a = WalkOk(root_, "file");
  auto b = WalkOk(root_, "sub");
  ASSERT_TRUE(fs_->GetAttr(*a).ok());  // a is now more recent than b
  WriteFile(exp_ + "/c", "c");
  auto c = WalkOk(root_, "c");
  EXPECT_TRUE(a->fd_open());
  EXPECT_FALSE(b->fd_open());
  EXPECT_TRUE(c->fd_open());
  EXPECT_EQ(cache->evictions(), 1u);
  // A node that goes away leaves the budget.
  c.reset();
  EXPECT_EQ(cache->open_fds(), 1u);
  ASSERT_TRUE(fs_->GetAttr(*b).ok());
  EXPECT_TRUE(a->fd_open());
  EXPECT_TRUE(b->fd_open());
  EXPECT_EQ(cache->reopens(), 1u);
}

TEST_P(HostFsTest, ManyNodesStayWithinTheFdBudget) {
  auto cache = WithFdBudget(16);
  ASSERT_EQ(::mkdir((exp_ + "/many").c_str(), 0755), 0);
  for (int i = 0; i < 2000; ++i) WriteFile(exp_ + "/many/" + std::to_string(i), "x");
  auto many = WalkOk(root_, "many");
  size_t before = OpenFdsOfThisProcess();
  std::vector<std::shared_ptr<Node>> held;
  for (int i = 0; i < 2000; ++i) {
    auto n = fs_->Walk(many, std::to_string(i));
    ASSERT_TRUE(n.ok()) << i << ": " << n.status();
    held.push_back(*n);
  }
  EXPECT_LE(OpenFdsOfThisProcess(), before + 16);
  // From many threads at once, every node still answers.
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = static_cast<size_t>(t); i < held.size(); i += 3) {
        if (!fs_->GetAttr(*held[i]).ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_LE(cache->open_fds(), 16u);
  EXPECT_LE(OpenFdsOfThisProcess(), before + 16);
}

}  // namespace
}  // namespace fun::p9

#include "lib/p9/errno_map.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace fun::p9 {
namespace {

// These tests run on Linux, where the E* macros are the wire's numbers.
TEST(DarwinToLinuxErrnoTest, NumbersThatDiffer) {
  EXPECT_EQ(DarwinToLinuxErrno(66), static_cast<uint32_t>(ENOTEMPTY));
  EXPECT_EQ(DarwinToLinuxErrno(62), static_cast<uint32_t>(ELOOP));
  EXPECT_EQ(DarwinToLinuxErrno(63), static_cast<uint32_t>(ENAMETOOLONG));
  EXPECT_EQ(DarwinToLinuxErrno(35), static_cast<uint32_t>(EAGAIN));
  EXPECT_EQ(DarwinToLinuxErrno(11), static_cast<uint32_t>(EDEADLK));
  EXPECT_EQ(DarwinToLinuxErrno(45), static_cast<uint32_t>(EOPNOTSUPP));
  EXPECT_EQ(DarwinToLinuxErrno(102), static_cast<uint32_t>(EOPNOTSUPP));
  EXPECT_EQ(DarwinToLinuxErrno(93), static_cast<uint32_t>(ENODATA));  // ENOATTR
  EXPECT_EQ(DarwinToLinuxErrno(96), static_cast<uint32_t>(ENODATA));
  EXPECT_EQ(DarwinToLinuxErrno(69), static_cast<uint32_t>(EDQUOT));
  EXPECT_EQ(DarwinToLinuxErrno(70), static_cast<uint32_t>(ESTALE));
  EXPECT_EQ(DarwinToLinuxErrno(77), static_cast<uint32_t>(ENOLCK));
  EXPECT_EQ(DarwinToLinuxErrno(78), static_cast<uint32_t>(ENOSYS));
  EXPECT_EQ(DarwinToLinuxErrno(84), static_cast<uint32_t>(EOVERFLOW));
  EXPECT_EQ(DarwinToLinuxErrno(89), static_cast<uint32_t>(ECANCELED));
  EXPECT_EQ(DarwinToLinuxErrno(92), static_cast<uint32_t>(EILSEQ));
  EXPECT_EQ(DarwinToLinuxErrno(100), static_cast<uint32_t>(EPROTO));
  EXPECT_EQ(DarwinToLinuxErrno(60), static_cast<uint32_t>(ETIMEDOUT));
  EXPECT_EQ(DarwinToLinuxErrno(61), static_cast<uint32_t>(ECONNREFUSED));
  EXPECT_EQ(DarwinToLinuxErrno(54), static_cast<uint32_t>(ECONNRESET));
  EXPECT_EQ(DarwinToLinuxErrno(57), static_cast<uint32_t>(ENOTCONN));
  EXPECT_EQ(DarwinToLinuxErrno(48), static_cast<uint32_t>(EADDRINUSE));
  EXPECT_EQ(DarwinToLinuxErrno(36), static_cast<uint32_t>(EINPROGRESS));
  EXPECT_EQ(DarwinToLinuxErrno(104), static_cast<uint32_t>(ENOTRECOVERABLE));
  EXPECT_EQ(DarwinToLinuxErrno(105), static_cast<uint32_t>(EOWNERDEAD));
}

TEST(DarwinToLinuxErrnoTest, LowNumbersAreShared) {
  // 1..34 are the same on both except 11 (Darwin EDEADLK, Linux EAGAIN).
  for (int e = 1; e <= 34; ++e) {
    if (e == 11) continue;
    EXPECT_EQ(DarwinToLinuxErrno(e), static_cast<uint32_t>(e)) << e;
  }
  EXPECT_EQ(DarwinToLinuxErrno(ENOENT), static_cast<uint32_t>(ENOENT));
  EXPECT_EQ(DarwinToLinuxErrno(EROFS), static_cast<uint32_t>(EROFS));
}

TEST(DarwinToLinuxErrnoTest, UnknownBecomesEio) {
  EXPECT_EQ(DarwinToLinuxErrno(0), static_cast<uint32_t>(EIO));
  EXPECT_EQ(DarwinToLinuxErrno(-3), static_cast<uint32_t>(EIO));
  EXPECT_EQ(DarwinToLinuxErrno(107), static_cast<uint32_t>(EIO));
  EXPECT_EQ(DarwinToLinuxErrno(100000), static_cast<uint32_t>(EIO));
}

TEST(DarwinToLinuxErrnoTest, EveryDarwinNumberMapsToANonZeroLinuxNumber) {
  for (int e = 1; e <= 106; ++e) {
    uint32_t l = DarwinToLinuxErrno(e);
    EXPECT_GT(l, 0u) << e;
    EXPECT_LE(l, 133u) << e;  // Linux's last errno (EHWPOISON)
  }
}

TEST(ToLinuxErrnoTest, IdentityOnLinux) {
  for (int e : {EPERM, ENOENT, EAGAIN, ENOTEMPTY, ELOOP, ENODATA, EOPNOTSUPP, ESTALE, EDQUOT}) {
    EXPECT_EQ(ToLinuxErrno(e), static_cast<uint32_t>(e));
  }
  EXPECT_EQ(ToLinuxErrno(0), static_cast<uint32_t>(EIO));
}

TEST(LinuxErrnoFromStatusTest, UsesSysErrnoThenCode) {
  EXPECT_EQ(LinuxErrnoFromStatus(ErrnoError(ENOTEMPTY, "rmdir")), static_cast<uint32_t>(ENOTEMPTY));
  EXPECT_EQ(LinuxErrnoFromStatus(NotFoundError("x")), static_cast<uint32_t>(ENOENT));
  EXPECT_EQ(LinuxErrnoFromStatus(InvalidArgumentError("x")), static_cast<uint32_t>(EINVAL));
  EXPECT_EQ(LinuxErrnoFromStatus(AlreadyExistsError("x")), static_cast<uint32_t>(EEXIST));
  EXPECT_EQ(LinuxErrnoFromStatus(PermissionDeniedError("x")), static_cast<uint32_t>(EACCES));
  EXPECT_EQ(LinuxErrnoFromStatus(UnimplementedError("x")), static_cast<uint32_t>(EOPNOTSUPP));
  EXPECT_EQ(LinuxErrnoFromStatus(InternalError("x")), static_cast<uint32_t>(EIO));
  EXPECT_EQ(LinuxErrnoFromStatus(OkStatus()), static_cast<uint32_t>(EIO));
}

TEST(LinuxErrnoConstantsTest, MatchLinuxHeaders) {
  EXPECT_EQ(linux_errno::kENOENT, static_cast<uint32_t>(ENOENT));
  EXPECT_EQ(linux_errno::kENOTEMPTY, static_cast<uint32_t>(ENOTEMPTY));
  EXPECT_EQ(linux_errno::kELOOP, static_cast<uint32_t>(ELOOP));
  EXPECT_EQ(linux_errno::kENODATA, static_cast<uint32_t>(ENODATA));
  EXPECT_EQ(linux_errno::kEOPNOTSUPP, static_cast<uint32_t>(EOPNOTSUPP));
  EXPECT_EQ(linux_errno::kESTALE, static_cast<uint32_t>(ESTALE));
  EXPECT_EQ(linux_errno::kEROFS, static_cast<uint32_t>(EROFS));
  EXPECT_EQ(linux_errno::kEPROTO, static_cast<uint32_t>(EPROTO));
  EXPECT_EQ(linux_errno::kENAMETOOLONG, static_cast<uint32_t>(ENAMETOOLONG));
}

}  // namespace
}  // namespace fun::p9

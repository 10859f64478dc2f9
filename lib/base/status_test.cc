#include "lib/base/status.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <memory>
#include <string>

namespace fun {
namespace {

TEST(StatusTest, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), Code::kOk);
  EXPECT_EQ(s.ToString(), "OK");
}

TEST(StatusTest, OkCodeDropsMessage) {
  Status s(Code::kOk, "ignored");
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.message(), "");
}

TEST(StatusTest, ErrorCarriesCodeAndMessage) {
  Status s = NotFoundError("no such instance \"x\"");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::kNotFound);
  EXPECT_EQ(s.ToString(), "NOT_FOUND: no such instance \"x\"");
}

TEST(StatusTest, ContextIsPrependedLayerByLayer) {
  Status s = ErrnoError(ENOENT, "/usr/bin/qemu-system-x86_64");
  s = s.WithContext("launching qemu").WithContext("starting instance default");
  EXPECT_EQ(s.message(),
            "starting instance default: launching qemu: /usr/bin/qemu-system-x86_64: No such "
            "file or directory");
  EXPECT_EQ(s.code(), Code::kNotFound);
  EXPECT_EQ(s.sys_errno(), ENOENT);
}

TEST(StatusTest, ContextOnOkStaysOk) { EXPECT_TRUE(OkStatus().WithContext("anything").ok()); }

TEST(StatusTest, ErrnoMapping) {
  EXPECT_EQ(CodeFromErrno(ENOENT), Code::kNotFound);
  EXPECT_EQ(CodeFromErrno(EACCES), Code::kPermissionDenied);
  EXPECT_EQ(CodeFromErrno(EPERM), Code::kPermissionDenied);
  EXPECT_EQ(CodeFromErrno(EEXIST), Code::kAlreadyExists);
  EXPECT_EQ(CodeFromErrno(EADDRINUSE), Code::kAlreadyExists);
  EXPECT_EQ(CodeFromErrno(EINVAL), Code::kInvalidArgument);
  EXPECT_EQ(CodeFromErrno(ENOSPC), Code::kResourceExhausted);
  EXPECT_EQ(CodeFromErrno(ECONNREFUSED), Code::kUnavailable);
  EXPECT_EQ(CodeFromErrno(ETIMEDOUT), Code::kDeadlineExceeded);
  EXPECT_EQ(CodeFromErrno(ENOSYS), Code::kUnimplemented);
  EXPECT_EQ(CodeFromErrno(0), Code::kOk);
  EXPECT_EQ(CodeFromErrno(123456), Code::kUnknown);
}

TEST(StatusTest, ErrnoZeroIsStillAnError) {
  Status s = ErrnoError(0, "weird");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::kUnknown);
}

TEST(StatusTest, CanonicalCodesMatchGrpcNumbering) {
  // grpc::StatusCode: NOT_FOUND = 5, UNAVAILABLE = 14, UNAUTHENTICATED = 16.
  EXPECT_EQ(FromCanonicalCode(5, "image not found").code(), Code::kNotFound);
  EXPECT_EQ(FromCanonicalCode(14, "connection refused").code(), Code::kUnavailable);
  EXPECT_EQ(FromCanonicalCode(16, "x").code(), Code::kUnauthenticated);
  EXPECT_TRUE(FromCanonicalCode(0, "x").ok());
  EXPECT_EQ(FromCanonicalCode(99, "x").code(), Code::kUnknown);
  EXPECT_EQ(FromCanonicalCode(-1, "x").code(), Code::kUnknown);
  EXPECT_EQ(FromCanonicalCode(5, "image not found").message(), "image not found");
}

TEST(StatusTest, CodeNames) {
  EXPECT_EQ(CodeName(Code::kInvalidArgument), "INVALID_ARGUMENT");
  EXPECT_EQ(CodeName(static_cast<Code>(77)), "UNKNOWN(77)");
}

StatusOr<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgumentError(std::to_string(x) + " is odd");
  return x / 2;
}

StatusOr<int> Quarter(int x) {
  FUN_ASSIGN_OR_RETURN(int h, Half(x));
  FUN_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

Status CheckQuarter(int x) {
  FUN_RETURN_IF_ERROR_CTX(Quarter(x), "quartering " + std::to_string(x));
  return OkStatus();
}

TEST(StatusOrTest, ValueAndError) {
  StatusOr<int> a = Quarter(8);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, 2);
  StatusOr<int> b = Quarter(6);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().message(), "3 is odd");
  EXPECT_EQ(b.value_or(-1), -1);
}

TEST(StatusOrTest, ReturnIfErrorAddsContext) {
  EXPECT_TRUE(CheckQuarter(4).ok());
  Status s = CheckQuarter(2);
  EXPECT_EQ(s.message(), "quartering 2: 1 is odd");
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
}

TEST(StatusOrTest, OkStatusWithoutValueBecomesInternal) {
  StatusOr<int> s = OkStatus();
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kInternal);
}

TEST(StatusOrTest, MoveOnlyValues) {
  StatusOr<std::unique_ptr<int>> p = std::make_unique<int>(7);
  ASSERT_TRUE(p.ok());
  std::unique_ptr<int> v = std::move(p).value();
  EXPECT_EQ(*v, 7);
}

TEST(StatusOrTest, ConvertsFromConstructibleTypes) {
  StatusOr<std::string> s = "literal";
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, "literal");
  EXPECT_EQ(s->size(), 7u);
}

}  // namespace
}  // namespace fun

// status.h: the one error type of the project.
//
// Every fallible function returns `fun::Status` (success or an error) or `fun::StatusOr<T>`
// (a value or an error). An error has a canonical code (the same numbering as gRPC and
// absl, so a gRPC status converts 1:1), a human message, and, when it came from a system
// call, the errno it came from. As an error crosses a layer, the layer adds what it was
// doing with `WithContext`, so the user reads the whole story in one line:
//
//   starting instance default: launching qemu: /usr/bin/qemu-system-x86_64: No such file
//
// Example:
//   fun::StatusOr<int> ParsePort(std::string_view s);
//   fun::Status Listen(std::string_view spec) {
//     FUN_ASSIGN_OR_RETURN(int port, ParsePort(spec));
//     if (::listen(fd, 16) != 0) return fun::ErrnoError(errno, "listen");
//     return fun::OkStatus();
//   }
//
// Thread-safety: values; safe to copy between threads.
#pragma once

#include <cassert>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace fun {

// Canonical codes, numbered as grpc::StatusCode and absl::StatusCode.
enum class Code : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

// "NOT_FOUND", "INVALID_ARGUMENT", ... ("UNKNOWN(<n>)" for a number outside the table).
std::string CodeName(Code code);

class [[nodiscard]] Status {
 public:
  // Success.
  Status() = default;
  // An error (or success when code is kOk, in which case the message is dropped).
  Status(Code code, std::string message);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  // The message, including any context added on the way up.
  const std::string& message() const { return message_; }
  // The errno this error came from, or 0.
  int sys_errno() const { return errno_; }

  // Returns this error with "context: " in front of the message. Success stays success.
  Status WithContext(std::string_view context) const&;
  Status WithContext(std::string_view context) &&;

  // "OK", or "<CODE>: <message>".
  std::string ToString() const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_ && a.errno_ == b.errno_;
  }

  // Ignores the status on purpose (for [[nodiscard]] call sites that truly do not care).
  void IgnoreError() const {}

 private:
  friend Status ErrnoError(int err, std::string_view what);
  Code code_ = Code::kOk;
  int errno_ = 0;
  std::string message_;
};

std::ostream& operator<<(std::ostream& os, const Status& s);

inline Status OkStatus() { return Status(); }

// Convenience constructors, one per code the project uses.
Status InvalidArgumentError(std::string message);
Status NotFoundError(std::string message);
Status AlreadyExistsError(std::string message);
Status PermissionDeniedError(std::string message);
Status FailedPreconditionError(std::string message);
Status UnavailableError(std::string message);
Status DeadlineExceededError(std::string message);
Status InternalError(std::string message);
Status UnimplementedError(std::string message);
Status ResourceExhaustedError(std::string message);
Status CancelledError(std::string message);
Status OutOfRangeError(std::string message);
Status DataLossError(std::string message);
Status AbortedError(std::string message);

// The canonical code for an errno value (ENOENT -> kNotFound, EACCES -> kPermissionDenied...).
Code CodeFromErrno(int err);

// An error from a failed system call: "<what>: <strerror(err)>", the code from CodeFromErrno,
// and sys_errno() == err. Call it right at the syscall boundary, with errno.
Status ErrnoError(int err, std::string_view what);

// An error from another system that uses canonical codes (gRPC's StatusCode). Numbers outside
// the table become kUnknown; 0 becomes OK.
Status FromCanonicalCode(int code, std::string message);

template <typename T>
class [[nodiscard]] StatusOr {
 public:
  // An error. Constructing from an OK status is a bug; it becomes kInternal.
  StatusOr(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (std::get<Status>(v_).ok()) {
      v_ = Status(Code::kInternal, "StatusOr constructed from an OK status without a value");
    }
  }
  // A value.
  StatusOr(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  template <typename U, typename = std::enable_if_t<std::is_constructible_v<T, U&&> &&
                                                    !std::is_same_v<std::decay_t<U>, Status> &&
                                                    !std::is_same_v<std::decay_t<U>, StatusOr<T>>>>
  StatusOr(U&& value) : v_(T(std::forward<U>(value))) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return std::holds_alternative<T>(v_); }
  // OK when a value is held.
  Status status() const { return ok() ? OkStatus() : std::get<Status>(v_); }

  // The value. Precondition: ok().
  T& value() & {
    assert(ok());
    return std::get<T>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<T>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<T>(std::move(v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  // The value, or `fallback` on error.
  template <typename U>
  T value_or(U&& fallback) const& {
    return ok() ? std::get<T>(v_) : T(std::forward<U>(fallback));
  }

 private:
  std::variant<Status, T> v_;
};

namespace internal {
inline Status AsStatus(const Status& s) { return s; }
inline Status AsStatus(Status&& s) { return std::move(s); }
template <typename T>
Status AsStatus(const StatusOr<T>& s) {
  return s.status();
}
}  // namespace internal

}  // namespace fun

#define FUN_STATUS_CONCAT_INNER(a, b) a##b
#define FUN_STATUS_CONCAT(a, b) FUN_STATUS_CONCAT_INNER(a, b)

// Returns the error from `expr` (a Status or StatusOr) to the caller, if it is one.
#define FUN_RETURN_IF_ERROR(expr)                                    \
  do {                                                               \
    ::fun::Status fun_status_tmp_ = ::fun::internal::AsStatus(expr); \
    if (!fun_status_tmp_.ok()) return fun_status_tmp_;               \
  } while (0)

// Like FUN_RETURN_IF_ERROR, adding "context: " to the message on the way up.
#define FUN_RETURN_IF_ERROR_CTX(expr, context)                                         \
  do {                                                                                 \
    ::fun::Status fun_status_tmp_ = ::fun::internal::AsStatus(expr);                   \
    if (!fun_status_tmp_.ok()) return std::move(fun_status_tmp_).WithContext(context); \
  } while (0)

// `FUN_ASSIGN_OR_RETURN(auto x, F());` declares x from F()'s value or returns its error.
#define FUN_ASSIGN_OR_RETURN(lhs, expr) \
  FUN_ASSIGN_OR_RETURN_IMPL(FUN_STATUS_CONCAT(fun_statusor_, __LINE__), lhs, expr)
#define FUN_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()

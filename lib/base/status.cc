#include "lib/base/status.h"

#include <cerrno>
#include <cstring>

namespace fun {

std::string CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "OK";
    case Code::kCancelled:
      return "CANCELLED";
    case Code::kUnknown:
      return "UNKNOWN";
    case Code::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case Code::kDeadlineExceeded:
      return "DEADLINE_EXCEEDED";
    case Code::kNotFound:
      return "NOT_FOUND";
    case Code::kAlreadyExists:
      return "ALREADY_EXISTS";
    case Code::kPermissionDenied:
      return "PERMISSION_DENIED";
    case Code::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case Code::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case Code::kAborted:
      return "ABORTED";
    case Code::kOutOfRange:
      return "OUT_OF_RANGE";
    case Code::kUnimplemented:
      return "UNIMPLEMENTED";
    case Code::kInternal:
      return "INTERNAL";
    case Code::kUnavailable:
      return "UNAVAILABLE";
    case Code::kDataLoss:
      return "DATA_LOSS";
    case Code::kUnauthenticated:
      return "UNAUTHENTICATED";
  }
  return "UNKNOWN(" + std::to_string(static_cast<int>(code)) + ")";
}

Status::Status(Code code, std::string message) : code_(code) {
  if (code != Code::kOk) message_ = std::move(message);
}

Status Status::WithContext(std::string_view context) const& {
  Status copy = *this;
  return std::move(copy).WithContext(context);
}

Status Status::WithContext(std::string_view context) && {
  if (ok() || context.empty()) return std::move(*this);
  std::string m;
  m.reserve(context.size() + 2 + message_.size());
  m.append(context);
  if (!message_.empty()) {
    m.append(": ");
    m.append(message_);
  }
  message_ = std::move(m);
  return std::move(*this);
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return CodeName(code_) + ": " + message_;
}

std::ostream& operator<<(std::ostream& os, const Status& s) { return os << s.ToString(); }

Status InvalidArgumentError(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
Status NotFoundError(std::string m) { return {Code::kNotFound, std::move(m)}; }
Status AlreadyExistsError(std::string m) { return {Code::kAlreadyExists, std::move(m)}; }
Status PermissionDeniedError(std::string m) { return {Code::kPermissionDenied, std::move(m)}; }
Status FailedPreconditionError(std::string m) { return {Code::kFailedPrecondition, std::move(m)}; }
Status UnavailableError(std::string m) { return {Code::kUnavailable, std::move(m)}; }
Status DeadlineExceededError(std::string m) { return {Code::kDeadlineExceeded, std::move(m)}; }
Status InternalError(std::string m) { return {Code::kInternal, std::move(m)}; }
Status UnimplementedError(std::string m) { return {Code::kUnimplemented, std::move(m)}; }
Status ResourceExhaustedError(std::string m) { return {Code::kResourceExhausted, std::move(m)}; }
Status CancelledError(std::string m) { return {Code::kCancelled, std::move(m)}; }
Status OutOfRangeError(std::string m) { return {Code::kOutOfRange, std::move(m)}; }
Status DataLossError(std::string m) { return {Code::kDataLoss, std::move(m)}; }
Status AbortedError(std::string m) { return {Code::kAborted, std::move(m)}; }

Code CodeFromErrno(int err) {
  switch (err) {
    case 0:
      return Code::kOk;
    case EINVAL:
    case ENAMETOOLONG:
    case E2BIG:
    case EDOM:
    case EFAULT:
    case EILSEQ:
    case ENOEXEC:
    case ENOTDIR:
    case EISDIR:
    case ENOTEMPTY:
    case ELOOP:
    case EBADF:
    case ENOTSOCK:
    case EDESTADDRREQ:
    case EPROTOTYPE:
    case ENOPROTOOPT:
      return Code::kInvalidArgument;
    case ENOENT:
    case ESRCH:
    case ENXIO:
    case ENODEV:
      return Code::kNotFound;
    case EEXIST:
    case EADDRINUSE:
    case EISCONN:
      return Code::kAlreadyExists;
    case EACCES:
    case EPERM:
    case EROFS:
      return Code::kPermissionDenied;
    case ENOSPC:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
    case EMLINK:
    case EFBIG:
    case EDQUOT:
    case ENOBUFS:
      return Code::kResourceExhausted;
    case EBUSY:
    case ECHILD:
    case ENOTCONN:
    case EPIPE:
    case ESPIPE:
    case ETXTBSY:
    case EXDEV:
      return Code::kFailedPrecondition;
    case EAGAIN:
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case EHOSTUNREACH:
    case ENETDOWN:
    case ENETUNREACH:
    case ENETRESET:
    case EADDRNOTAVAIL:
    case EINTR:
    case EIO:
      return Code::kUnavailable;
    case ETIMEDOUT:
    case ETIME:
      return Code::kDeadlineExceeded;
    case ENOSYS:
    case ENOTSUP:
    case EAFNOSUPPORT:
    case EPFNOSUPPORT:
    case EPROTONOSUPPORT:
    case ESOCKTNOSUPPORT:
      return Code::kUnimplemented;
    case ERANGE:
    case EOVERFLOW:
      return Code::kOutOfRange;
    case ECANCELED:
      return Code::kCancelled;
    case EDEADLK:
    case ENOLCK:
      return Code::kAborted;
    default:
      return Code::kUnknown;
  }
}

Status ErrnoError(int err, std::string_view what) {
  std::string m(what);
  if (!m.empty()) m.append(": ");
  m.append(std::strerror(err));  // NOLINT(concurrency-mt-unsafe): glibc returns static text
  Code code = CodeFromErrno(err);
  if (code == Code::kOk) code = Code::kUnknown;  // errno 0 passed as an error: still an error
  Status s(code, std::move(m));
  s.errno_ = err;
  return s;
}

Status FromCanonicalCode(int code, std::string message) {
  if (code == 0) return OkStatus();
  if (code < 0 || code > static_cast<int>(Code::kUnauthenticated)) {
    return {Code::kUnknown, std::move(message)};
  }
  return {static_cast<Code>(code), std::move(message)};
}

}  // namespace fun

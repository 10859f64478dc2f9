#include "lib/p9/errno_map.h"

#include <array>
#include <utility>

namespace fun::p9 {
namespace {

// Darwin errno -> Linux errno, indexed by the Darwin number (xnu bsd/sys/errno.h, ELAST 106).
// Linux numbers are written as literals (asm-generic/errno-base.h and errno.h) so the table
// means the same when compiled on macOS, where the E* macros have Darwin's values.
constexpr std::array<uint16_t, 107> kDarwinToLinux = {
    5,    // 0 (not an error) -> EIO
    1,    // EPERM
    2,    // ENOENT
    3,    // ESRCH
    4,    // EINTR
    5,    // EIO
    6,    // ENXIO
    7,    // E2BIG
    8,    // ENOEXEC
    9,    // EBADF
    10,   // ECHILD
    35,   // 11 EDEADLK -> Linux EDEADLK 35 (Linux 11 is EAGAIN)
    12,   // ENOMEM
    13,   // EACCES
    14,   // EFAULT
    15,   // ENOTBLK
    16,   // EBUSY
    17,   // EEXIST
    18,   // EXDEV
    19,   // ENODEV
    20,   // ENOTDIR
    21,   // EISDIR
    22,   // EINVAL
    23,   // ENFILE
    24,   // EMFILE
    25,   // ENOTTY
    26,   // ETXTBSY
    27,   // EFBIG
    28,   // ENOSPC
    29,   // ESPIPE
    30,   // EROFS
    31,   // EMLINK
    32,   // EPIPE
    33,   // EDOM
    34,   // ERANGE
    11,   // 35 EAGAIN/EWOULDBLOCK
    115,  // 36 EINPROGRESS
    114,  // 37 EALREADY
    88,   // 38 ENOTSOCK
    89,   // 39 EDESTADDRREQ
    90,   // 40 EMSGSIZE
    91,   // 41 EPROTOTYPE
    92,   // 42 ENOPROTOOPT
    93,   // 43 EPROTONOSUPPORT
    94,   // 44 ESOCKTNOSUPPORT
    95,   // 45 ENOTSUP -> EOPNOTSUPP (Linux ENOTSUP == EOPNOTSUPP == 95)
    96,   // 46 EPFNOSUPPORT
    97,   // 47 EAFNOSUPPORT
    98,   // 48 EADDRINUSE
    99,   // 49 EADDRNOTAVAIL
    100,  // 50 ENETDOWN
    101,  // 51 ENETUNREACH
    102,  // 52 ENETRESET
    103,  // 53 ECONNABORTED
    104,  // 54 ECONNRESET
    105,  // 55 ENOBUFS
    106,  // 56 EISCONN
    107,  // 57 ENOTCONN
    108,  // 58 ESHUTDOWN
    109,  // 59 ETOOMANYREFS
    110,  // 60 ETIMEDOUT
    111,  // 61 ECONNREFUSED
    40,   // 62 ELOOP
    36,   // 63 ENAMETOOLONG
    112,  // 64 EHOSTDOWN
    113,  // 65 EHOSTUNREACH
    39,   // 66 ENOTEMPTY
    11,   // 67 EPROCLIM -> EAGAIN (what Linux fork() says at the process limit)
    87,   // 68 EUSERS
    122,  // 69 EDQUOT
    116,  // 70 ESTALE
    66,   // 71 EREMOTE
    5,    // 72 EBADRPC -> EIO
    5,    // 73 ERPCMISMATCH -> EIO
    5,    // 74 EPROGUNAVAIL -> EIO
    5,    // 75 EPROGMISMATCH -> EIO
    5,    // 76 EPROCUNAVAIL -> EIO
    37,   // 77 ENOLCK
    38,   // 78 ENOSYS
    22,   // 79 EFTYPE -> EINVAL
    13,   // 80 EAUTH -> EACCES
    13,   // 81 ENEEDAUTH -> EACCES
    5,    // 82 EPWROFF -> EIO
    5,    // 83 EDEVERR -> EIO
    75,   // 84 EOVERFLOW
    8,    // 85 EBADEXEC -> ENOEXEC
    8,    // 86 EBADARCH -> ENOEXEC
    8,    // 87 ESHLIBVERS -> ENOEXEC
    8,    // 88 EBADMACHO -> ENOEXEC
    125,  // 89 ECANCELED
    43,   // 90 EIDRM
    42,   // 91 ENOMSG
    84,   // 92 EILSEQ
    61,   // 93 ENOATTR -> ENODATA (what Linux getxattr says for a missing attribute)
    74,   // 94 EBADMSG
    72,   // 95 EMULTIHOP
    61,   // 96 ENODATA
    67,   // 97 ENOLINK
    63,   // 98 ENOSR
    60,   // 99 ENOSTR
    71,   // 100 EPROTO
    62,   // 101 ETIME
    95,   // 102 EOPNOTSUPP
    1,    // 103 ENOPOLICY -> EPERM
    131,  // 104 ENOTRECOVERABLE
    130,  // 105 EOWNERDEAD
    105,  // 106 EQFULL -> ENOBUFS
};

}  // namespace

uint32_t DarwinToLinuxErrno(int darwin_errno) {
  if (darwin_errno <= 0 || static_cast<size_t>(darwin_errno) >= kDarwinToLinux.size()) {
    return linux_errno::kEIO;
  }
  return kDarwinToLinux[static_cast<size_t>(darwin_errno)];
}

uint32_t ToLinuxErrno(int host_errno) {
  if (host_errno <= 0) return linux_errno::kEIO;
#if defined(__APPLE__)
  return DarwinToLinuxErrno(host_errno);
#else
  return static_cast<uint32_t>(host_errno);
#endif
}

uint32_t LinuxErrnoFromStatus(const Status& status) {
  if (status.sys_errno() > 0) return ToLinuxErrno(status.sys_errno());
  switch (status.code()) {
    case Code::kInvalidArgument:
    case Code::kOutOfRange:
      return linux_errno::kEINVAL;
    case Code::kNotFound:
      return linux_errno::kENOENT;
    case Code::kAlreadyExists:
      return linux_errno::kEEXIST;
    case Code::kPermissionDenied:
    case Code::kUnauthenticated:
      return linux_errno::kEACCES;
    case Code::kUnimplemented:
      return linux_errno::kEOPNOTSUPP;
    case Code::kResourceExhausted:
    case Code::kUnavailable:
      return linux_errno::kEAGAIN;
    case Code::kFailedPrecondition:
      return linux_errno::kEINVAL;
    default:
      return linux_errno::kEIO;
  }
}

}  // namespace fun::p9

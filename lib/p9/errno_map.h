// errno_map.h: host errno values -> the Linux errno numbers that Rlerror carries.
//
// 9P2000.L sends Linux errno numbers whatever the server's OS. On a Linux host the mapping is
// the identity; on macOS (Darwin) many numbers differ (ENOTEMPTY is 66 there, 39 on Linux), so
// the Darwin table below is compiled on every platform and unit-tested on Linux.
//
//   uint32_t ecode = p9::ToLinuxErrno(errno);            // this host's errno
//   uint32_t e2 = p9::DarwinToLinuxErrno(66);            // 39 (ENOTEMPTY)
//   uint32_t e3 = p9::LinuxErrnoFromStatus(status);      // sys_errno(), else from the code
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>

#include "lib/base/status.h"

namespace fun::p9 {

// Linux numbers used by the server whatever the host (the wire's numbering).
namespace linux_errno {
inline constexpr uint32_t kEPERM = 1, kENOENT = 2, kEIO = 5, kEBADF = 9, kEAGAIN = 11, kEACCES = 13,
                          kEEXIST = 17, kEXDEV = 18, kENOTDIR = 20, kEISDIR = 21, kEINVAL = 22,
                          kEROFS = 30, kERANGE = 34, kENAMETOOLONG = 36, kENOSYS = 38,
                          kENOTEMPTY = 39, kELOOP = 40, kENODATA = 61, kEPROTO = 71,
                          kEOPNOTSUPP = 95, kESTALE = 116;
}  // namespace linux_errno

// Maps a Darwin (macOS, xnu bsd/sys/errno.h) errno to the Linux number. 0 and numbers Darwin
// does not define become EIO.
uint32_t DarwinToLinuxErrno(int darwin_errno);

// Maps an errno of the OS this was compiled for to the Linux number (identity on Linux; the
// Darwin table on macOS). 0 or a negative value becomes EIO.
uint32_t ToLinuxErrno(int host_errno);

// The Linux errno for an error Status: its sys_errno() when it came from a system call, else
// one picked from its canonical code (kNotFound -> ENOENT, kInvalidArgument -> EINVAL, ...).
// An OK status gives EIO (a caller bug; never 0, which Rlerror must not carry).
uint32_t LinuxErrnoFromStatus(const Status& status);

}  // namespace fun::p9

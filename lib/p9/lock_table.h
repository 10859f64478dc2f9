// lock_table.h: POSIX byte-range record locks kept in memory, for hosts without per-open-file
// locks (macOS has only per-process fcntl locks, under which two 9P connections served by one
// process would never conflict).
//
// Semantics are those of fcntl(F_SETLK/F_GETLK) with one owner per open file (as Linux OFD
// locks): a lock covers [start, start + length), length 0 meaning "to the end of file, however
// far it grows"; locks of different owners conflict when they overlap and one is a write lock;
// an owner's own locks never conflict with each other: a new lock replaces the owner's locks on
// the range (a read lock downgrades a write lock there, and the reverse), adjacent or
// overlapping locks of one type merge, and unlocking the middle of a lock splits it. Nothing
// ever blocks: a conflicting request is refused.
//
// Pure: no file system, no fds. Files and owners are opaque numbers the caller chooses (the
// node primitives use (st_dev, st_ino) for the file and the fd of the open file for the owner).
//
// Example:
//   LockTable t;
//   LockTable::File f{.dev = st.st_dev, .ino = st.st_ino};
//   t.Set(f, /*owner=*/7, LockTable::kWrite, 0, 10);          // true: granted
//   t.Set(f, /*owner=*/8, LockTable::kRead, 5, 1);            // false: conflicts with 7
//   std::optional<LockTable::Lock> l = t.Test(f, 8, LockTable::kWrite, 0, 0);  // 7's [0,10)
//   t.ReleaseOwner(7);                                         // 7's file was closed
//
// Thread-safety: every method is safe to call from many threads at once (one mutex).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "lib/base/status.h"

namespace fun::p9 {

class LockTable {
 public:
  enum Type : uint8_t { kRead, kWrite, kUnlock };
  using Owner = uint64_t;
  struct File {
    uint64_t dev = 0, ino = 0;
    bool operator<(const File& o) const { return dev != o.dev ? dev < o.dev : ino < o.ino; }
  };
  struct Lock {
    Owner owner = 0;
    Type type = kRead;
    uint64_t start = 0;
    uint64_t length = 0;  // 0: to the end of file
  };

  // The largest offset a lock may reach, as for a 64-bit off_t: start, and start + length - 1
  // when length > 0, must be at most this.
  static constexpr uint64_t kMaxOffset = INT64_MAX;

  // Checks a range as fcntl does: EINVAL for a start beyond kMaxOffset, EOVERFLOW for a range
  // that ends beyond it.
  static Status ValidateRange(uint64_t start, uint64_t length);

  // Locks (kRead, kWrite) or unlocks (kUnlock) [start, start + length) for `owner`. True when
  // done; false, with nothing changed, when another owner holds a conflicting lock. Unlocking
  // never conflicts. Errors: an invalid range (see ValidateRange) or type.
  StatusOr<bool> Set(const File& file, Owner owner, Type type, uint64_t start, uint64_t length);

  // The conflicting lock of another owner that starts first, or nullopt when a lock of `type`
  // (kRead or kWrite) on the range would be granted to `owner`.
  StatusOr<std::optional<Lock>> Test(const File& file, Owner owner, Type type, uint64_t start,
                                     uint64_t length) const;

  // Drops every lock `owner` holds, on every file (its open file was closed).
  void ReleaseOwner(Owner owner);

  // The locks held on `file`, ordered by owner then start (for tests and diagnostics).
  std::vector<Lock> LocksOf(const File& file) const;
  // Number of files with at least one lock.
  size_t file_count() const;

 private:
  // One held range; end is exclusive, kToEof for "to the end of file".
  struct Range {
    Owner owner;
    Type type;
    uint64_t start, end;
  };
  static constexpr uint64_t kToEof = UINT64_MAX;

  mutable std::mutex mu_;
  // Per file: non-overlapping ranges per owner, sorted by (owner, start); ranges of one owner
  // and one type never touch (they are merged).
  std::map<File, std::vector<Range>> files_;
};

}  // namespace fun::p9

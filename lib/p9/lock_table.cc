#include "lib/p9/lock_table.h"

#include <algorithm>
#include <cerrno>

namespace fun::p9 {

Status LockTable::ValidateRange(uint64_t start, uint64_t length) {
  if (start > kMaxOffset) return ErrnoError(EINVAL, "lock start");
  if (length > 0 && length - 1 > kMaxOffset - start) return ErrnoError(EOVERFLOW, "lock range");
  return OkStatus();
}

StatusOr<bool> LockTable::Set(const File& file, Owner owner, Type type, uint64_t start,
                              uint64_t length) {
  if (type != kRead && type != kWrite && type != kUnlock) return ErrnoError(EINVAL, "lock type");
  FUN_RETURN_IF_ERROR(ValidateRange(start, length));
  const uint64_t end = length == 0 ? kToEof : start + length;

  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(file);
  if (it == files_.end()) {
    if (type == kUnlock) return true;
    it = files_.emplace(file, std::vector<Range>()).first;
  }
  std::vector<Range>& ranges = it->second;

  if (type != kUnlock) {
    for (const Range& r : ranges) {
      bool overlaps = r.start < end && start < r.end;
      if (r.owner != owner && overlaps && (type == kWrite || r.type == kWrite)) return false;
    }
  }

  // Take [start, end) out of the owner's ranges (splitting the ones that stick out), then put
  // the new lock in and merge it with the owner's neighbours of the same type.
  std::vector<Range> next;
  next.reserve(ranges.size() + 2);
  Range merged{owner, type, start, end};
  for (const Range& r : ranges) {
    if (r.owner != owner) {
      next.push_back(r);
      continue;
    }
    bool touches = r.start <= end && start <= r.end;  // overlapping or adjacent
    if (type != kUnlock && r.type == type && touches) {
      merged.start = std::min(merged.start, r.start);
      merged.end = std::max(merged.end, r.end);
      continue;
    }
    if (r.end <= start || end <= r.start) {
      next.push_back(r);
      continue;
    }
    if (r.start < start) next.push_back(Range{r.owner, r.type, r.start, start});
    if (end < r.end) next.push_back(Range{r.owner, r.type, end, r.end});
  }
  if (type != kUnlock) next.push_back(merged);
  std::sort(next.begin(), next.end(), [](const Range& a, const Range& b) {
    return a.owner != b.owner ? a.owner < b.owner : a.start < b.start;
  });
  if (next.empty()) {
    files_.erase(it);
  } else {
    ranges = std::move(next);
  }
  return true;
}

StatusOr<std::optional<LockTable::Lock>> LockTable::Test(const File& file, Owner owner, Type type,
                                                         uint64_t start, uint64_t length) const {
  if (type != kRead && type != kWrite) return ErrnoError(EINVAL, "lock type");
  FUN_RETURN_IF_ERROR(ValidateRange(start, length));
  const uint64_t end = length == 0 ? kToEof : start + length;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(file);
  if (it == files_.end()) return std::optional<Lock>();
  const Range* first = nullptr;
  for (const Range& r : it->second) {
    bool overlaps = r.start < end && start < r.end;
    if (r.owner == owner || !overlaps || (type == kRead && r.type == kRead)) continue;
    if (first == nullptr || r.start < first->start) first = &r;
  }
  if (first == nullptr) return std::optional<Lock>();
  return std::optional<Lock>(Lock{.owner = first->owner,
                                  .type = first->type,
                                  .start = first->start,
                                  .length = first->end == kToEof ? 0 : first->end - first->start});
}

void LockTable::ReleaseOwner(Owner owner) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = files_.begin(); it != files_.end();) {
    std::vector<Range>& ranges = it->second;
    ranges.erase(std::remove_if(ranges.begin(), ranges.end(),
                                [owner](const Range& r) { return r.owner == owner; }),
                 ranges.end());
    it = ranges.empty() ? files_.erase(it) : std::next(it);
  }
}

std::vector<LockTable::Lock> LockTable::LocksOf(const File& file) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Lock> out;
  auto it = files_.find(file);
  if (it == files_.end()) return out;
  for (const Range& r : it->second) {
    out.push_back(Lock{.owner = r.owner,
                       .type = r.type,
                       .start = r.start,
                       .length = r.end == kToEof ? 0 : r.end - r.start});
  }
  return out;
}

size_t LockTable::file_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return files_.size();
}

}  // namespace fun::p9

#include "lib/vm/initrd_cpio.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include "lib/base/files.h"

namespace fun::vm {

namespace {

void Pad4(std::string& s) { s.append((4 - s.size() % 4) % 4, '\0'); }

void AppendEntry(std::string& out, uint32_t ino, mode_t mode, std::string_view name,
                 std::string_view data) {
  // magic, then 13 fields of 8 hex digits: ino mode uid gid nlink mtime filesize devmajor
  // devminor rdevmajor rdevminor namesize (with its NUL) check.
  out += fmt::format(
      "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}", ino,
      static_cast<uint32_t>(mode), 0, 0, S_ISDIR(mode) ? 2 : 1, 0, data.size(), 0, 0, 0, 0,
      name.size() + 1, 0);
  out += name;
  out += '\0';
  Pad4(out);
  out += data;
  Pad4(out);
}

Status CheckPath(std::string_view path) {
  if (path.empty() || path.front() == '/' || path.back() == '/') {
    return InvalidArgumentError(fmt::format("cpio entry '{}': give a relative path", path));
  }
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") {
      return InvalidArgumentError(
          fmt::format("cpio entry '{}': empty, '.' and '..' components are refused", path));
    }
    start = end + 1;
  }
  if (path.find('\0') != std::string_view::npos) {
    return InvalidArgumentError("cpio entry: a path with a NUL byte");
  }
  return OkStatus();
}

}  // namespace

StatusOr<std::string> BuildNewcArchive(const std::vector<CpioEntry>& entries) {
  std::string out;
  uint32_t ino = 1;
  for (const CpioEntry& e : entries) {
    FUN_RETURN_IF_ERROR(CheckPath(e.path));
    if (!S_ISREG(e.mode) && !S_ISDIR(e.mode)) {
      return InvalidArgumentError(
          fmt::format("cpio entry '{}': only regular files and directories", e.path));
    }
    if (S_ISDIR(e.mode) && !e.data.empty()) {
      return InvalidArgumentError(fmt::format("cpio entry '{}': a directory with data", e.path));
    }
    if (e.data.size() > 0xffffffffu) {
      return InvalidArgumentError(fmt::format("cpio entry '{}': over 4 GiB", e.path));
    }
    AppendEntry(out, ino++, e.mode, e.path, e.data);
  }
  AppendEntry(out, 0, 0, "TRAILER!!!", "");
  return out;
}

StatusOr<std::string> InstanceFilesArchive(std::string_view secret, std::string_view share_table) {
  std::vector<CpioEntry> files = {
      {.path = "etc", .mode = S_IFDIR | 0755},
      {.path = "etc/fun", .mode = S_IFDIR | 0755},
      {.path = "etc/fun/instance", .mode = S_IFDIR | 0700},
      {.path = "etc/fun/instance/secret", .mode = S_IFREG | 0600, .data = std::string(secret)},
  };
  if (!share_table.empty()) {
    files.push_back({.path = "etc/fun/instance/shares",
                     .mode = S_IFREG | 0644,
                     .data = std::string(share_table)});
  }
  return BuildNewcArchive(files);
}

Status WriteAppendedInitrd(const std::string& base, std::string_view archive,
                           const std::string& out) {
  FUN_ASSIGN_OR_RETURN(std::string initrd, ReadFileToString(base));
  Pad4(initrd);
  initrd += archive;
  return WriteFileAtomically(out, initrd, 0600).WithContext("writing the instance initrd");
}

}  // namespace fun::vm

// doctor_env.cc: RealDoctorEnv, the POSIX part (host_info_{linux,darwin}.cc hold the rest).
#include "tools/doctor/doctor_env.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "lib/vm/image.h"

namespace fun::doctor {

std::string_view FileTypeName(FileType type) {
  switch (type) {
    case FileType::kRegular:
      return "file";
    case FileType::kDirectory:
      return "directory";
    case FileType::kSocket:
      return "socket";
    case FileType::kSymlink:
      return "symlink";
    case FileType::kOther:
      return "special file";
  }
  return "unknown";
}

StatusOr<FileInfo> RealDoctorEnv::Stat(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return ErrnoError(errno, path);
  FileInfo f;
  f.type = S_ISREG(st.st_mode)    ? FileType::kRegular
           : S_ISDIR(st.st_mode)  ? FileType::kDirectory
           : S_ISSOCK(st.st_mode) ? FileType::kSocket
           : S_ISLNK(st.st_mode)  ? FileType::kSymlink
                                  : FileType::kOther;
  f.mode = static_cast<unsigned>(st.st_mode) & 07777;
  f.owner = st.st_uid;
  f.size = st.st_size > 0 ? static_cast<uint64_t>(st.st_size) : 0;
  return f;
}

Status RealDoctorEnv::Access(const std::string& path, int mode) {
  if (::access(path.c_str(), mode) != 0) return ErrnoError(errno, path);
  return OkStatus();
}

StatusOr<std::string> RealDoctorEnv::ReadFileTail(const std::string& path, size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return ErrnoError(errno, path);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    int err = errno;
    ::close(fd);
    return S_ISREG(st.st_mode) ? ErrnoError(err, path)
                               : InvalidArgumentError(path + " is not a regular file");
  }
  // Files in /proc report size 0: those (and any file that fits) are read from the start,
  // up to max_bytes; a longer file from size - max_bytes.
  auto size = static_cast<uint64_t>(st.st_size);
  off_t offset = size > max_bytes ? static_cast<off_t>(size - max_bytes) : 0;
  if (offset > 0 && ::lseek(fd, offset, SEEK_SET) < 0) {
    int err = errno;
    ::close(fd);
    return ErrnoError(err, "seeking in " + path);
  }
  std::string out;
  char buf[65536];
  while (out.size() < max_bytes) {
    size_t want = std::min(sizeof(buf), max_bytes - out.size());
    ssize_t n = ::read(fd, buf, want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return ErrnoError(err, "reading " + path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

StatusOr<std::vector<std::string>> RealDoctorEnv::ListDir(const std::string& path) {
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) return ErrnoError(errno, path);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

StatusOr<uint64_t> RealDoctorEnv::FreeDiskBytes(const std::string& path) {
  struct statvfs vfs {};
  if (::statvfs(path.c_str(), &vfs) != 0) return ErrnoError(errno, "statvfs " + path);
  return static_cast<uint64_t>(vfs.f_bavail) * static_cast<uint64_t>(vfs.f_frsize);
}

uid_t RealDoctorEnv::Uid() { return ::getuid(); }

StatusOr<std::string> RealDoctorEnv::FindProgram(const std::string& name) {
  const char* path = std::getenv("PATH");  // NOLINT(concurrency-mt-unsafe): read-only here
  return fun::FindProgram(name, path != nullptr ? std::string(path) : std::string());
}

StatusOr<ProcessResult> RealDoctorEnv::RunCommand(const Command& command) {
  return ProcessRunner::Default().Run(command);
}

std::string RealDoctorEnv::ExecutableDir() { return vm::ExecutableDir(); }

vm::HostFacts RealDoctorEnv::ProbeHostFacts() { return vm::ProbeHostFacts(); }

std::vector<std::string> RealDoctorEnv::ImageSearchPath(const Paths& paths) {
  return vm::ImageSearchPath(paths, "");
}

vm::InstanceStatus RealDoctorEnv::GetInstanceStatus(const Paths& paths, const std::string& name) {
  return vm::GetInstanceStatus(paths, name);
}

StatusOr<cri::RuntimeVersion> RealDoctorEnv::CriVersion(const std::string& socket,
                                                        std::chrono::milliseconds deadline) {
  cri::CriClientOptions o;
  o.default_timeout = deadline;
  o.max_receive_bytes = 1 << 20;  // a Version reply is tiny
  FUN_ASSIGN_OR_RETURN(std::unique_ptr<cri::CriClient> client, cri::CriClient::Connect(socket, o));
  return client->Version({.timeout = deadline});
}

StatusOr<uint64_t> ParseMemTotal(std::string_view meminfo) {
  // "MemTotal:       16318436 kB"
  constexpr std::string_view kKey = "MemTotal:";
  size_t at = 0;
  while (at < meminfo.size()) {
    size_t nl = meminfo.find('\n', at);
    std::string_view line =
        meminfo.substr(at, nl == std::string_view::npos ? std::string_view::npos : nl - at);
    at = nl == std::string_view::npos ? meminfo.size() : nl + 1;
    if (line.substr(0, kKey.size()) != kKey) continue;
    line.remove_prefix(kKey.size());
    while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    uint64_t kib = 0;
    size_t i = 0;
    for (; i < line.size() && line[i] >= '0' && line[i] <= '9'; ++i) {
      if (kib > (UINT64_MAX >> 10) / 10) return InvalidArgumentError("MemTotal is too large");
      kib = kib * 10 + static_cast<uint64_t>(line[i] - '0');
    }
    std::string_view unit = line.substr(i);
    while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
    if (i == 0 || unit != "kB") {
      return InvalidArgumentError(fmt::format("malformed MemTotal line: \"MemTotal:{}\"", line));
    }
    return kib << 10;
  }
  return InvalidArgumentError("no MemTotal line in /proc/meminfo");
}

}  // namespace fun::doctor

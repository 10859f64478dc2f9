#include "lib/base/files.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <fstream>

#include "lib/base/socket.h"
#include "lib/base/unique_fd.h"

namespace fun {

Status WriteFileAtomically(const std::string& path, std::string_view data, mode_t mode) {
  const std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd.valid()) return ErrnoError(errno, "writing " + tmp);
  if (Status s = WriteAll(fd.get(), data); !s.ok()) {
    ::unlink(tmp.c_str());
    return s.WithContext("writing " + tmp);
  }
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoError(err, "renaming " + tmp);
  }
  return OkStatus();
}

StatusOr<std::string> ReadFileToString(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError(errno, "reading " + path);
  std::string out;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, "reading " + path);
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

StatusOr<size_t> CountOpenFds(int pid) {
#ifdef __linux__
  const std::string dir = pid == 0 ? "/proc/self/fd" : "/proc/" + std::to_string(pid) + "/fd";
#else
  if (pid != 0 && pid != ::getpid()) return UnimplementedError("counting another process's fds");
  const std::string dir = "/dev/fd";
#endif
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return ErrnoError(errno, "listing " + dir);
  size_t n = 0;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  const bool self = pid == 0 || pid == ::getpid();
  ::closedir(d);
  return self && n > 0 ? n - 1 : n;  // the listing's own fd
}

StatusOr<uint64_t> RaiseOpenFileLimit() {
  rlimit l{};
  if (::getrlimit(RLIMIT_NOFILE, &l) != 0) return ErrnoError(errno, "getrlimit(RLIMIT_NOFILE)");
  rlim_t want = l.rlim_max;
#ifdef __APPLE__
  if (want == RLIM_INFINITY || want > OPEN_MAX) want = OPEN_MAX;
#endif
  if (l.rlim_cur >= want) return static_cast<uint64_t>(l.rlim_cur);
  l.rlim_cur = want;
  if (::setrlimit(RLIMIT_NOFILE, &l) != 0) return ErrnoError(errno, "setrlimit(RLIMIT_NOFILE)");
  return static_cast<uint64_t>(want);
}

std::string TailFile(const std::string& path, size_t lines) {
  std::ifstream in(path);
  if (!in) return "";
  std::deque<std::string> last;
  for (std::string line; std::getline(in, line);) {
    last.push_back(line);
    if (last.size() > lines) last.pop_front();
  }
  std::string out;
  for (const auto& l : last) out += l + "\n";
  return out;
}

}  // namespace fun

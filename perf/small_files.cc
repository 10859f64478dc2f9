// small_files: how long creating, stat'ing and unlinking many small files takes in one folder,
// each phase timed on its own, for perf/p9_vm.sh (which runs this same binary on the host and,
// statically linked, in a busybox container in the VM: no shell loop's cost in the figures).
//
//   build/perf/small_files DIR [--count 10000] [--bytes 0]
//   -> {"count": 10000, "bytes": 0, "create_s": 1.93, "stat_s": 0.88, "unlink_s": 1.41}
//
// DIR must not exist; it is made, filled with COUNT files named f0..f<COUNT-1>, and removed.
//   create  open(O_CREAT|O_EXCL|O_WRONLY), write BYTES (when > 0), close: per file
//   stat    stat(2) of each file by its path, in creation order
//   unlink  unlink(2) of each file, in creation order
// Exit status 1 (with the failing call on stderr) if any call fails. Plain libc on purpose:
// the binary is linked statically and runs on any x86-64 Linux.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Steady = std::chrono::steady_clock;

double Seconds(Steady::time_point from) {
  return std::chrono::duration<double>(Steady::now() - from).count();
}

int Fail(const char* what, const std::string& path) {
  std::fprintf(stderr, "small_files: %s %s: %s\n", what, path.c_str(), std::strerror(errno));
  return 1;
}

bool ParseCount(const char* s, long* out) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < 0 || v > 10'000'000) return false;
  *out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  long count = 10000, bytes = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--count" || a == "--bytes") && i + 1 < argc) {
      if (!ParseCount(argv[++i], a == "--count" ? &count : &bytes)) {
        std::fprintf(stderr, "small_files: %s needs a number 0..10000000\n", a.c_str());
        return 2;
      }
    } else if (dir.empty() && !a.empty() && a[0] != '-') {
      dir = a;
    } else {
      std::fprintf(stderr, "usage: small_files DIR [--count N] [--bytes B]\n");
      return 2;
    }
  }
  if (dir.empty()) {
    std::fprintf(stderr, "usage: small_files DIR [--count N] [--bytes B]\n");
    return 2;
  }
  if (::mkdir(dir.c_str(), 0755) != 0) return Fail("mkdir", dir);
  std::vector<std::string> paths;
  paths.reserve(static_cast<size_t>(count));
  for (long i = 0; i < count; ++i) paths.push_back(dir + "/f" + std::to_string(i));
  const std::string data(static_cast<size_t>(bytes), 'x');

  Steady::time_point t0 = Steady::now();
  for (const std::string& p : paths) {
    const int fd = ::open(p.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) return Fail("creating", p);
    if (!data.empty() && ::write(fd, data.data(), data.size()) != static_cast<ssize_t>(bytes)) {
      return Fail("writing", p);
    }
    if (::close(fd) != 0) return Fail("closing", p);
  }
  const double create_s = Seconds(t0);

  t0 = Steady::now();
  for (const std::string& p : paths) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) return Fail("stat", p);
    if (st.st_size != bytes) {
      errno = EIO;
      return Fail("unexpected size of", p);
    }
  }
  const double stat_s = Seconds(t0);

  t0 = Steady::now();
  for (const std::string& p : paths) {
    if (::unlink(p.c_str()) != 0) return Fail("unlinking", p);
  }
  const double unlink_s = Seconds(t0);
  if (::rmdir(dir.c_str()) != 0) return Fail("rmdir", dir);

  std::printf(
      "{\"count\": %ld, \"bytes\": %ld, \"create_s\": %.4f, \"stat_s\": %.4f, \"unlink_s\": "
      "%.4f}\n",
      count, bytes, create_s, stat_s, unlink_s);
  return 0;
}

// Fuzzes the 9P server with message sequences against a real temp-dir export: each input is a
// stream of 9P messages (seeds start with Tversion + Tattach) handed to a fresh Session. Any
// sequence gets replies that decode, never a crash, a leak or undefined behaviour; and nothing
// outside the export ever changes: a canary folder beside it (reachable only by escaping
// through "..", a symlink or a rename) is checked after every input.
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "lib/base/log.h"
#include "lib/p9/codec.h"
#include "lib/p9/server.h"

namespace {

std::string g_root, g_export, g_canary;
std::unique_ptr<fun::p9::Server> g_server;

int RemoveEntry(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }

void ResetExport() {
  ::nftw(g_export.c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS);
  ::mkdir(g_export.c_str(), 0755);
  ::mkdir((g_export + "/dir").c_str(), 0755);
  std::ofstream(g_export + "/file") << "hello 9p";
  std::ofstream(g_export + "/dir/inner") << "inner";
  (void)!::symlink("/etc", (g_export + "/abs_link").c_str());
  (void)!::symlink("../canary", (g_export + "/rel_link").c_str());
  (void)!::symlink("../../canary/secret", (g_export + "/dir/up_link").c_str());
}

std::string CanaryState() {
  std::string out;
  DIR* d = ::opendir(g_canary.c_str());
  if (d == nullptr) return "<canary dir gone>";
  while (dirent* e = ::readdir(d)) out += std::string(e->d_name) + ";";
  ::closedir(d);
  std::ifstream in(g_canary + "/secret");
  std::stringstream ss;
  ss << in.rdbuf();
  struct stat st {};
  ::stat((g_canary + "/secret").c_str(), &st);
  return out + "|" + ss.str() + "|" + std::to_string(st.st_mode) + "|" + std::to_string(st.st_size);
}

std::string g_canary_state;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fun::log::Default().SetStderrLevel(fun::log::Level::kOff);
  char tmpl[] = "/tmp/fun-p9-fuzz-XXXXXX";
  g_root = ::mkdtemp(tmpl);
  g_export = g_root + "/export";
  g_canary = g_root + "/canary";
  ::mkdir(g_canary.c_str(), 0755);
  std::ofstream(g_canary + "/secret") << "must never change";
  ::chmod((g_canary + "/secret").c_str(), 0644);
  ResetExport();
  g_canary_state = CanaryState();
  auto server = fun::p9::Server::Create(
      {.exports = {{.name = "export", .dir = g_export, .read_only = false}}, .workers = 1});
  if (!server.ok()) {
    std::fprintf(stderr, "p9_server_fuzzer: %s\n", server.status().ToString().c_str());
    std::abort();
  }
  g_server = std::move(*server);
  std::atexit([] {
    g_server.reset();
    ::nftw(g_root.c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ResetExport();
  {
    auto session = g_server->NewSession();
    std::string_view bytes(reinterpret_cast<const char*>(data), size);
    std::string reply;
    int messages = 0;
    while (!bytes.empty() && messages++ < 64) {
      auto next = fun::p9::NextMessageSize(bytes, 1 << 20);
      if (!next.ok() || !next->has_value() || **next > bytes.size()) break;
      auto frame = fun::p9::Decode(bytes.substr(0, **next));
      bytes.remove_prefix(**next);
      if (!frame.ok()) continue;
      session->HandleMessage(*frame, &reply);
      auto decoded = fun::p9::Decode(reply);
      if (!decoded.ok()) {
        std::fprintf(stderr, "reply to %s does not decode: %s\n",
                     fun::p9::Describe(frame->msg).c_str(), decoded.status().ToString().c_str());
        __builtin_trap();
      }
    }
  }
  if (CanaryState() != g_canary_state) {
    std::fprintf(stderr, "the canary outside the export changed: %s\n", CanaryState().c_str());
    __builtin_trap();
  }
  return 0;
}

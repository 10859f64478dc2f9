// Fuzzes the config.json parser and the `-p` port spec parser: any bytes give a value or a
// one-line error, never a crash; and whatever parses prints back to text that parses to the
// same value.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string_view>

#include "lib/base/instance_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fun::InstanceConfig defaults =
      fun::DefaultInstanceConfig({.is_macos = false, .is_arm64 = false, .home_dir = "/home/u"});
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto port = fun::ParsePortSpec(text); port.ok()) {
    auto back = fun::ParsePortSpec(fun::FormatPortSpec(*port));
    if (!back.ok() || !(*back == *port)) {
      std::fprintf(stderr, "port spec round trip failed: %s\n", fun::FormatPortSpec(*port).c_str());
      __builtin_trap();
    }
  }
  auto cfg = fun::ParseInstanceConfig(text, defaults);
  if (!cfg.ok()) {
    if (cfg.status().message().empty() || cfg.status().message().find('\n') != std::string::npos) {
      std::fprintf(stderr, "error message must be one non-empty line: [%s]\n",
                   cfg.status().message().c_str());
      __builtin_trap();
    }
    return 0;
  }
  std::string again = fun::SerializeInstanceConfig(*cfg);
  auto round = fun::ParseInstanceConfig(again, defaults);
  if (!round.ok() || !(*round == *cfg)) {
    std::fprintf(stderr, "round trip failed: %s\n", again.c_str());
    __builtin_trap();
  }
  return 0;
}

// Fuzzes the config.json parser: any bytes give a config or an error, never a crash; and a
// config that parses serializes to JSON that parses back to the same config.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string_view>

#include "lib/base/instance_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fun::InstanceConfig defaults =
      fun::DefaultInstanceConfig({.is_macos = false, .is_arm64 = false, .home_dir = "/home/u"});
  std::string_view text(reinterpret_cast<const char*>(data), size);
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

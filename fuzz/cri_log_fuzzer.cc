// Fuzzes the CRI container log parser: the bytes of a log file come from the VM and from
// whatever a container prints. Checks the splitter's invariants on arbitrary input.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lib/cri/log_line.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  fun::cri::LogSplitter split(256);
  size_t lines = 0;
  auto sink = [&](const fun::StatusOr<fun::cri::LogEntry>& e) {
    ++lines;
    if (e.ok() && e->message.size() > 256) __builtin_trap();  // bounded by max_line
  };
  // Feed in two uneven pieces: the result must not depend on chunking.
  split.Feed(bytes.substr(0, size / 3), sink);
  split.Feed(bytes.substr(size / 3), sink);
  split.Finish(sink);
  fun::cri::LogTail tail(3);
  size_t start = 0;
  for (size_t i = 0; i <= size; ++i) {
    if (i == size || bytes[i] == '\n') {
      tail.Add(bytes.substr(start, i - start));
      start = i + 1;
    }
  }
  (void)lines;
  return 0;
}

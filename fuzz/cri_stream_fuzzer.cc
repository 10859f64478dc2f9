// Fuzzes the streaming exec codec (lib/cri/stream_codec.h): everything containerd's stream
// server sends (the upgrade reply, SPDY frames, the status JSON) and the URL CRI returns are
// untrusted. The first byte picks the decoder; the rest is its input.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "lib/cri/stream_codec.h"

namespace stream = fun::cri::stream;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0: {
      // Frames, fed in two uneven pieces: the result must not depend on chunking.
      stream::FrameDecoder whole(4096), split(4096);
      whole.Append(in);
      split.Append(in.substr(0, in.size() / 3));
      size_t a = 0, b = 0;
      bool whole_err = false, split_err = false;
      while (true) {
        auto f = whole.Next();
        if (!f.ok()) {
          whole_err = true;
          break;
        }
        if (!f->has_value()) break;
        if ((*f)->data.size() > 4096) __builtin_trap();  // bounded
        ++a;
      }
      for (int round = 0; round < 2; ++round) {
        while (true) {
          auto f = split.Next();
          if (!f.ok()) {
            split_err = true;
            break;
          }
          if (!f->has_value()) break;
          ++b;
        }
        if (split_err) break;
        if (round == 0) split.Append(in.substr(in.size() / 3));
      }
      if (whole_err != split_err || (!whole_err && a != b)) __builtin_trap();
      break;
    }
    case 1: {
      auto r = stream::ParseUpgradeResponse(in);
      if (r.ok() && r->has_value() && **r > in.size()) __builtin_trap();
      break;
    }
    case 2: {
      auto r = stream::ParseExitStatus(in);
      if (r.ok() && (r->exit_code < 0 || r->exit_code > 255)) __builtin_trap();
      break;
    }
    case 3: {
      auto u = stream::ParseStreamUrl(in);
      if (u.ok()) {
        const std::string req = stream::EncodeUpgradeRequest(*u);
        // No header injection: the request line and headers stay what we wrote.
        if (req.find("\r\n\r\n") != req.size() - 4) __builtin_trap();
      }
      break;
    }
  }
  return 0;
}

// Writes one seed per 9P message type (every field set) into the directory given, for the
// p9_decode_fuzzer corpus:  p9_make_seeds fuzz/corpus/p9_decode_fuzzer
#include <cstdio>
#include <fstream>
#include <string>
#include <variant>

#include "lib/p9/codec.h"

namespace {

struct Filler {
  uint64_t next = 1;
  void operator()(uint8_t& v) { v = static_cast<uint8_t>(next++); }
  void operator()(uint16_t& v) { v = static_cast<uint16_t>(next++); }
  void operator()(uint32_t& v) { v = static_cast<uint32_t>(next++); }
  void operator()(uint64_t& v) { v = next++; }
  void operator()(std::string& s) { s = "n" + std::to_string(next++); }
  void operator()(fun::p9::Qid& q) { q = {fun::p9::kQidDir, 1, next++}; }
  void operator()(std::vector<std::string>& v) { v = {"etc", "..", "passwd"}; }
  void operator()(std::vector<fun::p9::Qid>& v) { v = {{0, 1, 2}, {0x80, 3, 4}}; }
  void operator()(fun::p9::Data& d) { d.bytes = "some payload"; }
};

template <size_t I = 0>
void WriteAll(const std::string& dir) {
  if constexpr (I < std::variant_size_v<fun::p9::Message>) {
    using M = std::variant_alternative_t<I, fun::p9::Message>;
    M m;
    Filler f;
    m.Fields(f);
    std::string wire;
    if (fun::p9::Encode(static_cast<uint16_t>(I + 1), m, &wire).ok()) {
      std::ofstream(dir + "/" + fun::p9::MsgTypeName(static_cast<uint8_t>(M::kType)),
                    std::ios::binary)
          << wire;
    }
    WriteAll<I + 1>(dir);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: p9_make_seeds DIR\n");
    return 2;
  }
  WriteAll(argv[1]);
  return 0;
}

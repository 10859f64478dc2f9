// codec.h: the pure 9P2000.L codec: bytes in, message out, and back. No sockets, no files.
//
// Every decode is bounds-checked: a size field that lies, a string longer than its buffer, more
// than 16 walk names or qids, a count beyond the buffer, trailing bytes or an unknown type give
// an InvalidArgument error naming what was wrong; never undefined behaviour. Bytes from the
// guest are hostile (shared/ARCHITECTURE.md); fuzz/p9_decode_fuzzer.cc holds the decoder to it.
//
//   std::string wire;
//   FUN_RETURN_IF_ERROR(p9::Encode(tag, p9::Rlopen{.qid = q, .iounit = 0}, &wire));
//   FUN_ASSIGN_OR_RETURN(p9::Frame f, p9::Decode(wire));   // f.tag, f.msg (a variant)
//
// Stream framing: NextMessageSize() says how many bytes the next message takes once its first
// four bytes are in, and refuses sizes below 7 or above the negotiated msize.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/status.h"
#include "lib/p9/messages.h"

namespace fun::p9 {

struct Frame {
  uint16_t tag = kNoTag;
  Message msg;
};

// Decodes exactly one message that occupies all of `bytes`. Data fields of the result point
// into `bytes`.
StatusOr<Frame> Decode(std::string_view bytes);

// Only the header: type and tag (for answering a message whose body failed to decode).
struct Header {
  uint32_t size = 0;
  uint8_t type = 0;
  uint16_t tag = kNoTag;
};
StatusOr<Header> DecodeHeader(std::string_view bytes);

// Appends the encoding of one message to *out. Fails (and appends nothing) when a field cannot
// be represented: a string over 65535 bytes, more than 16 walk names or qids, data over 4 GiB.
Status Encode(uint16_t tag, const Message& msg, std::string* out);

// The size of the next message in a stream that starts with `buffered`: nullopt while fewer than
// 4 bytes are there; an error when the size is below 7 or above max_size.
StatusOr<std::optional<uint32_t>> NextMessageSize(std::string_view buffered, uint32_t max_size);

// Rread without a copy: reserve kRreadHeaderSize bytes, read the payload right after them, then
// fill the header in with WriteRreadHeader.
inline constexpr size_t kRreadHeaderSize = 11;  // size[4] type[1] tag[2] count[4]
void WriteRreadHeader(char* header, uint16_t tag, uint32_t count);

// One Rreaddir entry: qid[13] offset[8] type[1] name[s].
struct Dirent {
  Qid qid;
  uint64_t offset = 0;  // the offset to pass to the next Treaddir to continue after this entry
  uint8_t type = 0;     // DT_* value
  std::string name;
  friend bool operator==(const Dirent&, const Dirent&) = default;
};

// Packs entries into an Rreaddir payload of at most `max_bytes`.
class DirentWriter {
 public:
  DirentWriter(std::string* out, uint32_t max_bytes) : out_(out), max_(max_bytes) {}
  // False (and nothing written) when the entry does not fit; names over 65535 bytes never fit.
  bool Add(const Qid& qid, uint64_t offset, uint8_t type, std::string_view name);
  static size_t EntrySize(std::string_view name) { return 13 + 8 + 1 + 2 + name.size(); }

 private:
  std::string* out_;
  uint32_t max_;
  uint32_t used_ = 0;
};

StatusOr<std::vector<Dirent>> ParseDirents(std::string_view data);

// One line for logs, fields in wire order: 'Twalk 1 2 ["etc" "passwd"]'. Data is shown by length
// only; bytes outside printable ASCII are escaped.
std::string Describe(const Message& msg);

}  // namespace fun::p9

#include "lib/p9/codec.h"

#include <fmt/format.h>

#include <array>
#include <cstring>
#include <utility>

namespace fun::p9 {
namespace {

void PutLe(std::string* out, uint64_t v, int bytes) {
  char b[8];
  for (int i = 0; i < bytes; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out->append(b, static_cast<size_t>(bytes));
}

uint64_t GetLe(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

// Walks a message's fields and appends them. The first unrepresentable field sets err.
struct Writer {
  std::string* out;
  std::string err;

  void operator()(const uint8_t& v) { PutLe(out, v, 1); }
  void operator()(const uint16_t& v) { PutLe(out, v, 2); }
  void operator()(const uint32_t& v) { PutLe(out, v, 4); }
  void operator()(const uint64_t& v) { PutLe(out, v, 8); }
  void operator()(const std::string& s) {
    if (s.size() > 0xffff) {
      if (err.empty()) err = fmt::format("a string of {} bytes (at most 65535)", s.size());
      return;
    }
    PutLe(out, s.size(), 2);
    out->append(s);
  }
  void operator()(const Qid& q) {
    PutLe(out, q.type, 1);
    PutLe(out, q.version, 4);
    PutLe(out, q.path, 8);
  }
  void operator()(const std::vector<std::string>& names) {
    if (names.size() > kMaxWalkNames) {
      if (err.empty()) err = fmt::format("{} walk names (at most 16)", names.size());
      return;
    }
    PutLe(out, names.size(), 2);
    for (const auto& n : names) (*this)(n);
  }
  void operator()(const std::vector<Qid>& qids) {
    if (qids.size() > kMaxWalkNames) {
      if (err.empty()) err = fmt::format("{} walk qids (at most 16)", qids.size());
      return;
    }
    PutLe(out, qids.size(), 2);
    for (const auto& q : qids) (*this)(q);
  }
  void operator()(const Data& d) {
    if (d.bytes.size() > 0xffffffffull) {
      if (err.empty()) err = "a payload over 4 GiB";
      return;
    }
    PutLe(out, d.bytes.size(), 4);
    out->append(d.bytes);
  }
};

// Walks a message's fields and fills them from the buffer. The first problem sets err and every
// later read is a no-op.
struct Reader {
  std::string_view buf;
  size_t pos = 0;
  std::string err;

  bool Need(size_t n, const char* what) {
    if (!err.empty()) return false;
    if (buf.size() - pos < n) {
      err = fmt::format("{} needs {} bytes at offset {}, only {} left", what, n, pos + 7,
                        buf.size() - pos);
      return false;
    }
    return true;
  }
  uint64_t Get(int bytes, const char* what) {
    if (!Need(static_cast<size_t>(bytes), what)) return 0;
    uint64_t v = GetLe(buf.data() + pos, bytes);
    pos += static_cast<size_t>(bytes);
    return v;
  }
  void operator()(uint8_t& v) { v = static_cast<uint8_t>(Get(1, "a u8 field")); }
  void operator()(uint16_t& v) { v = static_cast<uint16_t>(Get(2, "a u16 field")); }
  void operator()(uint32_t& v) { v = static_cast<uint32_t>(Get(4, "a u32 field")); }
  void operator()(uint64_t& v) { v = Get(8, "a u64 field"); }
  void operator()(std::string& s) {
    size_t n = Get(2, "a string length");
    if (!Need(n, "a string")) return;
    s.assign(buf.data() + pos, n);
    pos += n;
  }
  void operator()(Qid& q) {
    q.type = static_cast<uint8_t>(Get(1, "a qid"));
    q.version = static_cast<uint32_t>(Get(4, "a qid"));
    q.path = Get(8, "a qid");
  }
  void operator()(std::vector<std::string>& names) {
    size_t n = Get(2, "a walk name count");
    if (!err.empty()) return;
    if (n > kMaxWalkNames) {
      err = fmt::format("{} walk names (at most 16)", n);
      return;
    }
    names.resize(n);
    for (auto& name : names) (*this)(name);
  }
  void operator()(std::vector<Qid>& qids) {
    size_t n = Get(2, "a qid count");
    if (!err.empty()) return;
    if (n > kMaxWalkNames) {
      err = fmt::format("{} walk qids (at most 16)", n);
      return;
    }
    qids.resize(n);
    for (auto& q : qids) (*this)(q);
  }
  void operator()(Data& d) {
    size_t n = Get(4, "a payload count");
    if (!Need(n, "a payload")) return;
    d.bytes = buf.substr(pos, n);
    pos += n;
  }
};

using DecodeFn = bool (*)(Reader&, Message*);

template <typename M>
bool DecodeAs(Reader& r, Message* out) {
  M m;
  m.Fields(r);
  if (!r.err.empty()) return false;
  *out = std::move(m);
  return true;
}

template <size_t... I>
constexpr std::array<DecodeFn, 256> MakeDecodeTable(std::index_sequence<I...>) {
  std::array<DecodeFn, 256> t{};
  ((t[static_cast<uint8_t>(std::variant_alternative_t<I, Message>::kType)] =
        &DecodeAs<std::variant_alternative_t<I, Message>>),
   ...);
  return t;
}

constexpr std::array<DecodeFn, 256> kDecodeTable =
    MakeDecodeTable(std::make_index_sequence<std::variant_size_v<Message>>{});

template <size_t... I>
constexpr std::array<bool, 256> MakeKnownTable(std::index_sequence<I...>) {
  std::array<bool, 256> t{};
  ((t[static_cast<uint8_t>(std::variant_alternative_t<I, Message>::kType)] = true), ...);
  return t;
}

Status Malformed(uint8_t type, std::string_view why) {
  return InvalidArgumentError(fmt::format("malformed 9P message ({}): {}", MsgTypeName(type), why));
}

}  // namespace

std::string MsgTypeName(uint8_t type) {
  switch (static_cast<MsgType>(type)) {
    case MsgType::kTlerror:
      return "Tlerror";
    case MsgType::kRlerror:
      return "Rlerror";
    case MsgType::kTstatfs:
      return "Tstatfs";
    case MsgType::kRstatfs:
      return "Rstatfs";
    case MsgType::kTlopen:
      return "Tlopen";
    case MsgType::kRlopen:
      return "Rlopen";
    case MsgType::kTlcreate:
      return "Tlcreate";
    case MsgType::kRlcreate:
      return "Rlcreate";
    case MsgType::kTsymlink:
      return "Tsymlink";
    case MsgType::kRsymlink:
      return "Rsymlink";
    case MsgType::kTmknod:
      return "Tmknod";
    case MsgType::kRmknod:
      return "Rmknod";
    case MsgType::kTrename:
      return "Trename";
    case MsgType::kRrename:
      return "Rrename";
    case MsgType::kTreadlink:
      return "Treadlink";
    case MsgType::kRreadlink:
      return "Rreadlink";
    case MsgType::kTgetattr:
      return "Tgetattr";
    case MsgType::kRgetattr:
      return "Rgetattr";
    case MsgType::kTsetattr:
      return "Tsetattr";
    case MsgType::kRsetattr:
      return "Rsetattr";
    case MsgType::kTxattrwalk:
      return "Txattrwalk";
    case MsgType::kRxattrwalk:
      return "Rxattrwalk";
    case MsgType::kTxattrcreate:
      return "Txattrcreate";
    case MsgType::kRxattrcreate:
      return "Rxattrcreate";
    case MsgType::kTreaddir:
      return "Treaddir";
    case MsgType::kRreaddir:
      return "Rreaddir";
    case MsgType::kTfsync:
      return "Tfsync";
    case MsgType::kRfsync:
      return "Rfsync";
    case MsgType::kTlock:
      return "Tlock";
    case MsgType::kRlock:
      return "Rlock";
    case MsgType::kTgetlock:
      return "Tgetlock";
    case MsgType::kRgetlock:
      return "Rgetlock";
    case MsgType::kTlink:
      return "Tlink";
    case MsgType::kRlink:
      return "Rlink";
    case MsgType::kTmkdir:
      return "Tmkdir";
    case MsgType::kRmkdir:
      return "Rmkdir";
    case MsgType::kTrenameat:
      return "Trenameat";
    case MsgType::kRrenameat:
      return "Rrenameat";
    case MsgType::kTunlinkat:
      return "Tunlinkat";
    case MsgType::kRunlinkat:
      return "Runlinkat";
    case MsgType::kTversion:
      return "Tversion";
    case MsgType::kRversion:
      return "Rversion";
    case MsgType::kTauth:
      return "Tauth";
    case MsgType::kRauth:
      return "Rauth";
    case MsgType::kTattach:
      return "Tattach";
    case MsgType::kRattach:
      return "Rattach";
    case MsgType::kRerror:
      return "Rerror";
    case MsgType::kTflush:
      return "Tflush";
    case MsgType::kRflush:
      return "Rflush";
    case MsgType::kTwalk:
      return "Twalk";
    case MsgType::kRwalk:
      return "Rwalk";
    case MsgType::kTread:
      return "Tread";
    case MsgType::kRread:
      return "Rread";
    case MsgType::kTwrite:
      return "Twrite";
    case MsgType::kRwrite:
      return "Rwrite";
    case MsgType::kTclunk:
      return "Tclunk";
    case MsgType::kRclunk:
      return "Rclunk";
    case MsgType::kTremove:
      return "Tremove";
    case MsgType::kRremove:
      return "Rremove";
  }
  return fmt::format("type {}", type);
}

MsgType TypeOf(const Message& m) {
  return std::visit([](const auto& v) { return std::decay_t<decltype(v)>::kType; }, m);
}

StatusOr<Header> DecodeHeader(std::string_view bytes) {
  if (bytes.size() < kHeaderSize) {
    return InvalidArgumentError(fmt::format(
        "malformed 9P message: {} bytes, shorter than the 7-byte header", bytes.size()));
  }
  Header h;
  h.size = static_cast<uint32_t>(GetLe(bytes.data(), 4));
  h.type = static_cast<uint8_t>(bytes[4]);
  h.tag = static_cast<uint16_t>(GetLe(bytes.data() + 5, 2));
  return h;
}

StatusOr<Frame> Decode(std::string_view bytes) {
  FUN_ASSIGN_OR_RETURN(Header h, DecodeHeader(bytes));
  if (h.size != bytes.size()) {
    return Malformed(
        h.type, fmt::format("size field says {} bytes, the message has {}", h.size, bytes.size()));
  }
  DecodeFn fn = kDecodeTable[h.type];
  if (fn == nullptr) return Malformed(h.type, "unknown message type");
  Reader r{bytes.substr(kHeaderSize)};
  Frame f;
  f.tag = h.tag;
  if (!fn(r, &f.msg)) return Malformed(h.type, r.err);
  if (r.pos != r.buf.size()) {
    return Malformed(h.type, fmt::format("{} trailing bytes", r.buf.size() - r.pos));
  }
  return f;
}

Status Encode(uint16_t tag, const Message& msg, std::string* out) {
  size_t start = out->size();
  PutLe(out, 0, 4);  // size, patched below
  PutLe(out, static_cast<uint8_t>(TypeOf(msg)), 1);
  PutLe(out, tag, 2);
  Writer w{out, {}};
  std::visit(
      [&w](const auto& m) {
        // Fields() only reads through the Writer; the const_cast lets one member template
        // serve both directions.
        using M = std::decay_t<decltype(m)>;
        const_cast<M&>(m).Fields(w);
      },
      msg);
  size_t size = out->size() - start;
  if (w.err.empty() && size > 0xffffffffull) w.err = "a message over 4 GiB";
  if (!w.err.empty()) {
    out->resize(start);
    return InvalidArgumentError(
        fmt::format("cannot encode {}: {}", MsgTypeName(static_cast<uint8_t>(TypeOf(msg))), w.err));
  }
  for (int i = 0; i < 4; ++i)
    (*out)[start + static_cast<size_t>(i)] = static_cast<char>((size >> (8 * i)) & 0xff);
  return OkStatus();
}

StatusOr<std::optional<uint32_t>> NextMessageSize(std::string_view buffered, uint32_t max_size) {
  if (buffered.size() < 4) return std::optional<uint32_t>();
  auto size = static_cast<uint32_t>(GetLe(buffered.data(), 4));
  if (size < kHeaderSize) {
    return InvalidArgumentError(
        fmt::format("malformed 9P stream: a message of {} bytes (at least 7)", size));
  }
  if (size > max_size) {
    return InvalidArgumentError(
        fmt::format("malformed 9P stream: a message of {} bytes exceeds msize {}", size, max_size));
  }
  return std::optional<uint32_t>(size);
}

void WriteRreadHeader(char* header, uint16_t tag, uint32_t count) {
  uint32_t size = static_cast<uint32_t>(kRreadHeaderSize) + count;
  for (int i = 0; i < 4; ++i) header[i] = static_cast<char>((size >> (8 * i)) & 0xff);
  header[4] = static_cast<char>(MsgType::kRread);
  header[5] = static_cast<char>(tag & 0xff);
  header[6] = static_cast<char>(tag >> 8);
  for (int i = 0; i < 4; ++i) header[7 + i] = static_cast<char>((count >> (8 * i)) & 0xff);
}

bool DirentWriter::Add(const Qid& qid, uint64_t offset, uint8_t type, std::string_view name) {
  if (name.size() > 0xffff) return false;
  size_t need = EntrySize(name);
  if (used_ + need > max_) return false;
  PutLe(out_, qid.type, 1);
  PutLe(out_, qid.version, 4);
  PutLe(out_, qid.path, 8);
  PutLe(out_, offset, 8);
  PutLe(out_, type, 1);
  PutLe(out_, name.size(), 2);
  out_->append(name);
  used_ += static_cast<uint32_t>(need);
  return true;
}

StatusOr<std::vector<Dirent>> ParseDirents(std::string_view data) {
  std::vector<Dirent> out;
  Reader r{data};
  while (r.pos < data.size()) {
    Dirent d;
    r(d.qid);
    r(d.offset);
    r(d.type);
    r(d.name);
    if (!r.err.empty()) {
      return InvalidArgumentError("malformed 9P directory entries: " + r.err);
    }
    out.push_back(std::move(d));
  }
  return out;
}

namespace {

struct Describer {
  std::string out;
  void Sep() {
    if (!out.empty()) out += ' ';
  }
  void operator()(const uint8_t& v) {
    Sep();
    out += std::to_string(v);
  }
  void operator()(const uint16_t& v) {
    Sep();
    out += std::to_string(v);
  }
  void operator()(const uint32_t& v) {
    Sep();
    out += std::to_string(v);
  }
  void operator()(const uint64_t& v) {
    Sep();
    out += std::to_string(v);
  }
  void operator()(const std::string& s) {
    Sep();
    out += '"';
    for (char c : s) {
      if (static_cast<unsigned char>(c) < 0x20 || c == '"' || c == '\\' ||
          static_cast<unsigned char>(c) >= 0x7f) {
        out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
      } else {
        out += c;
      }
    }
    out += '"';
  }
  void operator()(const Qid& q) {
    Sep();
    out += fmt::format("qid({:#x},{},{})", q.type, q.version, q.path);
  }
  void operator()(const std::vector<std::string>& names) {
    Sep();
    Describer inner;
    for (const auto& n : names) inner(n);
    out += "[" + inner.out + "]";
  }
  void operator()(const std::vector<Qid>& qids) {
    Sep();
    Describer inner;
    for (const auto& q : qids) inner(q);
    out += "[" + inner.out + "]";
  }
  void operator()(const Data& d) {
    Sep();
    out += fmt::format("<{} bytes>", d.bytes.size());
  }
};

}  // namespace

std::string Describe(const Message& msg) {
  Describer d;
  std::visit(
      [&d](const auto& m) {
        using M = std::decay_t<decltype(m)>;
        const_cast<M&>(m).Fields(d);
      },
      msg);
  std::string name = MsgTypeName(static_cast<uint8_t>(TypeOf(msg)));
  return d.out.empty() ? name : name + " " + d.out;
}

}  // namespace fun::p9

// Writes the 9P seed corpora:
//   p9_make_seeds fuzz/corpus/p9_decode_fuzzer fuzz/corpus/p9_server_fuzzer
// one seed per message type (every field set) for the decoder, and request sequences that
// version, attach and then exercise each operation (including escape attempts) for the server.
#include <cstdio>
#include <fstream>
#include <string>
#include <variant>
#include <vector>

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

using namespace fun::p9;

// A session: Tversion + Tattach(fid 0 = export root), then `ops`.
void WriteSession(const std::string& dir, const std::string& name, std::vector<Message> ops) {
  std::string wire;
  uint16_t tag = 1;
  (void)Encode(kNoTag, Tversion{.msize = 65536, .version = "9P2000.L"}, &wire);
  (void)Encode(tag++,
               Tattach{.fid = 0, .afid = kNoFid, .uname = "root", .aname = "export", .n_uname = 0},
               &wire);
  for (const auto& m : ops) (void)Encode(tag++, m, &wire);
  std::ofstream(dir + "/" + name, std::ios::binary) << wire;
}

void WriteServerSeeds(const std::string& d) {
  WriteSession(d, "read_file",
               {Twalk{.fid = 0, .newfid = 1, .wnames = {"file"}},
                Tgetattr{.fid = 1, .request_mask = kGetattrAll}, Tlopen{.fid = 1, .flags = 0},
                Tread{.fid = 1, .count = 4096}, Tclunk{.fid = 1}});
  WriteSession(d, "readdir",
               {Twalk{.fid = 0, .newfid = 1, .wnames = {"dir"}}, Tlopen{.fid = 1, .flags = 0x10000},
                Treaddir{.fid = 1, .offset = 0, .count = 8192},
                Treaddir{.fid = 1, .offset = 2, .count = 8192}});
  WriteSession(
      d, "create_write",
      {Twalk{.fid = 0, .newfid = 1, .wnames = {}},
       Tlcreate{.fid = 1, .name = "new", .flags = 2, .mode = 0644},
       Twrite{.fid = 1, .offset = 0, .data = {"data"}}, Tfsync{.fid = 1}, Tclunk{.fid = 1}});
  WriteSession(
      d, "mkdir_symlink_link",
      {Tmkdir{.dfid = 0, .name = "d2", .mode = 0755},
       Tsymlink{.fid = 0, .name = "s", .symtgt = "../canary/secret"},
       Twalk{.fid = 0, .newfid = 1, .wnames = {"file"}}, Tlink{.dfid = 0, .fid = 1, .name = "hard"},
       Tmknod{.dfid = 0, .name = "fifo", .mode = 010644}});
  WriteSession(d, "rename_unlink",
               {Trenameat{.olddirfid = 0, .oldname = "file", .newdirfid = 0, .newname = "f2"},
                Tunlinkat{.dirfd = 0, .name = "f2", .flags = 0},
                Tunlinkat{.dirfd = 0, .name = "dir", .flags = kAtRemoveDir}});
  WriteSession(d, "escape_dotdot",
               {Twalk{.fid = 0, .newfid = 1, .wnames = {"..", "..", "canary", "secret"}},
                Twalk{.fid = 0, .newfid = 2, .wnames = {"dir", "..", ".."}},
                Tlopen{.fid = 2, .flags = 0}, Treaddir{.fid = 2, .count = 4096}});
  WriteSession(d, "escape_symlinks",
               {Twalk{.fid = 0, .newfid = 1, .wnames = {"rel_link", "secret"}},
                Twalk{.fid = 0, .newfid = 2, .wnames = {"rel_link"}}, Tlopen{.fid = 2, .flags = 2},
                Twrite{.fid = 2, .data = {"pwned"}},
                Twalk{.fid = 0, .newfid = 3, .wnames = {"dir", "up_link"}},
                Tsetattr{.fid = 3, .valid = kSetattrMode | kSetattrSize, .mode = 0777},
                Treadlink{.fid = 3}});
  WriteSession(d, "escape_rename",
               {Twalk{.fid = 0, .newfid = 1, .wnames = {"rel_link"}},
                Trenameat{.olddirfid = 0, .oldname = "file", .newdirfid = 1, .newname = "x"},
                Trename{.fid = 0, .dfid = 1, .name = "y"},
                Tunlinkat{.dirfd = 1, .name = "secret", .flags = 0}});
  WriteSession(
      d, "setattr_xattr_lock",
      {Twalk{.fid = 0, .newfid = 1, .wnames = {"file"}},
       Tsetattr{.fid = 1, .valid = kSetattrMode | kSetattrAtime | kSetattrMtime, .mode = 0600},
       Txattrwalk{.fid = 1, .newfid = 2, .name = "user.x"},
       Txattrcreate{.fid = 1, .name = "user.y", .attr_size = 3}, Tlopen{.fid = 1, .flags = 2},
       Tlock{
           .fid = 1, .type = kLockWrite, .start = 0, .length = 10, .proc_id = 1, .client_id = "c"},
       Tgetlock{.fid = 1, .type = kLockRead, .length = 10, .client_id = "c"}, Tstatfs{.fid = 0},
       Tflush{.oldtag = 3}, Tremove{.fid = 1}});
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: p9_make_seeds DECODER_DIR SERVER_DIR\n");
    return 2;
  }
  WriteAll(argv[1]);
  WriteServerSeeds(argv[2]);
  return 0;
}

// messages.h: every 9P2000.L message, T and R, as a plain struct.
//
// Each struct names its wire type (kType) and lists its fields in wire order in Fields(), which
// the codec (codec.h) walks to encode and decode; so the layout of a message is written once.
// Field names follow the protocol (shared/PROTOCOLS.md section 1).
//
// `Data` fields (Twrite, Rread, Rreaddir) are views: a decoded one points into the buffer it was
// decoded from, which must outlive it; an encoded one is copied into the output.
//
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace fun::p9 {

inline constexpr uint16_t kNoTag = 0xFFFF;
inline constexpr uint32_t kNoFid = 0xFFFFFFFF;
inline constexpr uint32_t kNoUid = 0xFFFFFFFF;
inline constexpr size_t kMaxWalkNames = 16;
inline constexpr uint32_t kHeaderSize = 7;     // size[4] type[1] tag[2]
inline constexpr uint32_t kIoHeaderSize = 24;  // what the Linux client reserves per read/write
inline constexpr uint32_t kMinMsize = 4096;    // the Linux client refuses less
inline constexpr std::string_view kVersion9P2000L = "9P2000.L";

enum class MsgType : uint8_t {
  kTlerror = 6,
  kRlerror = 7,
  kTstatfs = 8,
  kRstatfs = 9,
  kTlopen = 12,
  kRlopen = 13,
  kTlcreate = 14,
  kRlcreate = 15,
  kTsymlink = 16,
  kRsymlink = 17,
  kTmknod = 18,
  kRmknod = 19,
  kTrename = 20,
  kRrename = 21,
  kTreadlink = 22,
  kRreadlink = 23,
  kTgetattr = 24,
  kRgetattr = 25,
  kTsetattr = 26,
  kRsetattr = 27,
  kTxattrwalk = 30,
  kRxattrwalk = 31,
  kTxattrcreate = 32,
  kRxattrcreate = 33,
  kTreaddir = 40,
  kRreaddir = 41,
  kTfsync = 50,
  kRfsync = 51,
  kTlock = 52,
  kRlock = 53,
  kTgetlock = 54,
  kRgetlock = 55,
  kTlink = 70,
  kRlink = 71,
  kTmkdir = 72,
  kRmkdir = 73,
  kTrenameat = 74,
  kRrenameat = 75,
  kTunlinkat = 76,
  kRunlinkat = 77,
  kTversion = 100,
  kRversion = 101,
  kTauth = 102,
  kRauth = 103,
  kTattach = 104,
  kRattach = 105,
  kRerror = 107,
  kTflush = 108,
  kRflush = 109,
  kTwalk = 110,
  kRwalk = 111,
  kTread = 116,
  kRread = 117,
  kTwrite = 118,
  kRwrite = 119,
  kTclunk = 120,
  kRclunk = 121,
  kTremove = 122,
  kRremove = 123,
};

// "Tversion", "Rlerror", ... or "type 200" for a number outside the table.
std::string MsgTypeName(uint8_t type);

// qid.type bits.
inline constexpr uint8_t kQidDir = 0x80;
inline constexpr uint8_t kQidAppend = 0x40;
inline constexpr uint8_t kQidExcl = 0x20;
inline constexpr uint8_t kQidAuth = 0x08;
inline constexpr uint8_t kQidTmp = 0x04;
inline constexpr uint8_t kQidSymlink = 0x02;
inline constexpr uint8_t kQidFile = 0x00;

struct Qid {
  uint8_t type = 0;
  uint32_t version = 0;
  uint64_t path = 0;
  friend bool operator==(const Qid&, const Qid&) = default;
};

// A counted byte payload: count[4] then the bytes.
struct Data {
  std::string_view bytes;
  friend bool operator==(const Data& a, const Data& b) { return a.bytes == b.bytes; }
};

// Tgetattr request_mask / Rgetattr valid bits.
inline constexpr uint64_t kGetattrMode = 0x1, kGetattrNlink = 0x2, kGetattrUid = 0x4,
                          kGetattrGid = 0x8, kGetattrRdev = 0x10, kGetattrAtime = 0x20,
                          kGetattrMtime = 0x40, kGetattrCtime = 0x80, kGetattrIno = 0x100,
                          kGetattrSize = 0x200, kGetattrBlocks = 0x400, kGetattrBasic = 0x7ff,
                          kGetattrBtime = 0x800, kGetattrGen = 0x1000, kGetattrDataVersion = 0x2000,
                          kGetattrAll = 0x3fff;
// Tsetattr valid bits.
inline constexpr uint32_t kSetattrMode = 0x1, kSetattrUid = 0x2, kSetattrGid = 0x4,
                          kSetattrSize = 0x8, kSetattrAtime = 0x10, kSetattrMtime = 0x20,
                          kSetattrCtime = 0x40, kSetattrAtimeSet = 0x80, kSetattrMtimeSet = 0x100;
// Tlock/Tgetlock.
inline constexpr uint8_t kLockRead = 0, kLockWrite = 1, kLockUnlock = 2;
inline constexpr uint8_t kLockSuccess = 0, kLockBlocked = 1, kLockError = 2, kLockGrace = 3;
inline constexpr uint32_t kLockFlagsBlock = 1, kLockFlagsReclaim = 2;
// Tunlinkat flags.
inline constexpr uint32_t kAtRemoveDir = 0x200;

#define FUN_P9_MSG(Name) static constexpr MsgType kType = MsgType::k##Name

struct Rlerror {
  FUN_P9_MSG(Rlerror);
  uint32_t ecode = 0;
  template <class F>
  void Fields(F& f) {
    f(ecode);
  }
};
struct Tstatfs {
  FUN_P9_MSG(Tstatfs);
  uint32_t fid = 0;
  template <class F>
  void Fields(F& f) {
    f(fid);
  }
};
struct Rstatfs {
  FUN_P9_MSG(Rstatfs);
  uint32_t type = 0, bsize = 0;
  uint64_t blocks = 0, bfree = 0, bavail = 0, files = 0, ffree = 0, fsid = 0;
  uint32_t namelen = 0;
  template <class F>
  void Fields(F& f) {
    f(type);
    f(bsize);
    f(blocks);
    f(bfree);
    f(bavail);
    f(files);
    f(ffree);
    f(fsid);
    f(namelen);
  }
};
struct Tlopen {
  FUN_P9_MSG(Tlopen);
  uint32_t fid = 0, flags = 0;
  template <class F>
  void Fields(F& f) {
    f(fid);
    f(flags);
  }
};
struct Rlopen {
  FUN_P9_MSG(Rlopen);
  Qid qid;
  uint32_t iounit = 0;
  template <class F>
  void Fields(F& f) {
    f(qid);
    f(iounit);
  }
};
struct Tlcreate {
  FUN_P9_MSG(Tlcreate);
  uint32_t fid = 0;
  std::string name;
  uint32_t flags = 0, mode = 0, gid = 0;
  template <class F>
  void Fields(F& f) {
    f(fid);
    f(name);
    f(flags);
    f(mode);
    f(gid);
  }
};
struct Rlcreate {
  FUN_P9_MSG(Rlcreate);
  Qid qid;
  uint32_t iounit = 0;
  template <class F>
  void Fields(F& f) {
    f(qid);
    f(iounit);
  }
};
struct Tsymlink {
  FUN_P9_MSG(Tsymlink);
  uint32_t fid = 0;
  std::string name, symtgt;
  uint32_t gid = 0;
  template <class F>
  void Fields(F& f) {
    f(fid);
    f(name);
    f(symtgt);
    f(gid);
  }
};
struct Rsymlink {
  FUN_P9_MSG(Rsymlink);
  Qid qid;
  template <class F>
  void Fields(F& f) {
    f(qid);
  }
};
struct Tmknod {
  FUN_P9_MSG(Tmknod);
  uint32_t dfid = 0;
  std::string name;
  uint32_t mode = 0, major = 0, minor = 0, gid = 0;
  template <class F>
  void Fields(F& f) {
    f(dfid);
    f(name);
    f(mode);
    f(major);
    f(minor);
    f(gid);
  }
};
struct Rmknod {
  FUN_P9_MSG(Rmknod);
  Qid qid;
  template <class F>
  void Fields(F& f) {
    f(qid);
  }
};
struct Trename {
  FUN_P9_MSG(Trename);
  uint32_t fid = 0, dfid = 0;
  std::string name;
  template <class F>
  void Fields(F& f) {
    f(fid);
    f(dfid);
    f(name);
  }
};
struct Rrename {
  FUN_P9_MSG(Rrename);
  template <class F>
  void Fields(F&) {}
};
struct Treadlink {
  FUN_P9_MSG(Treadlink);
  uint32_t fid = 0;
  template <class F>
  void Fields(F& f) {
    f(fid);
  }
};
struct Rreadlink {
  FUN_P9_MSG(Rreadlink);
  std::string target;
  template <class F>
  void Fields(F& f) {
    f(target);
  }
};
struct Tgetattr {
  FUN_P9_MSG(Tgetattr);
  uint32_t fid = 0;
  uint64_t request_mask = 0;
  template <class F>
  void Fields(F& f) {
    f(fid);
    f(request_mask);
  }
};
struct Rgetattr {
  FUN_P9_MSG(Rgetattr);
  uint64_t valid = 0;
  Qid qid;
  uint32_t mode = 0, uid = 0, gid = 0;
  uint64_t nlink = 0, rdev = 0, size = 0, blksize = 0, blocks = 0;
  uint64_t atime_sec = 0, atime_nsec = 0, mtime_sec = 0, mtime_nsec = 0, ctime_sec = 0,
           ctime_nsec = 0, btime_sec = 0, btime_nsec = 0, gen = 0, data_version = 0;
  template <class F>
  void Fields(F& f) {
    f(valid);
    f(qid);
    f(mode);
    f(uid);
    f(gid);
    f(nlink);
    f(rdev);
    f(size);
    f(blksize);
    f(blocks);
    f(atime_sec);
    f(atime_nsec);
    f(mtime_sec);
    f(mtime_nsec);
    f(ctime_sec);
    f(ctime_nsec);
    f(btime_sec);
    f(btime_nsec);
    f(gen);
    f(data_version);
  }
};
struct Tsetattr {
  FUN_P9_MSG(Tsetattr);
  uint32_t fid = 0, valid = 0, mode = 0, uid = 0, gid = 0;
  uint64_t size = 0;
  uint64_t atime_sec = 0, atime_nsec = 0, mtime_sec = 0, mtime_nsec = 0;
  template <class F>
  void Fields(F& f) {
    f(fid);
    f(valid);
    f(mode);
    f(uid);
    f(gid);
    f(size);
    f(atime_sec);
    f(atime_nsec);
    f(mtime_sec);
    f(mtime_nsec);
  }
};
struct Rsetattr {
  FUN_P9_MSG(Rsetattr);
  template <class F>
  void Fields(F&) {}
};
struct Txattrwalk {
  FUN_P9_MSG(Txattrwalk);
  uint32_t fid = 0, newfid = 0;
  std::string name;
  template <class F>
  void Fields(F& f) {
    f(fid);
    f(newfid);
    f(name);
  }
};
struct Rxattrwalk {
  FUN_P9_MSG(Rxattrwalk);
  uint64_t size = 0;
  template <class F>
  void Fields(F& f) {
    f(size);
  }
};
struct Txattrcreate {
  FUN_P9_MSG(Txattrcreate);
  uint32_t fid = 0;
  std::string name;
  uint64_t attr_size = 0;
  uint32_t flags = 0;
  template <class F>
  void Fields(F& f) {
    f(fid);
    f(name);
    f(attr_size);
    f(flags);
  }
};
struct Rxattrcreate {
  FUN_P9_MSG(Rxattrcreate);
  template <class F>
  void Fields(F&) {}
};
struct Treaddir {
  FUN_P9_MSG(Treaddir);
  uint32_t fid = 0;
  uint64_t offset = 0;
  uint32_t count = 0;
  template <class F>
  void Fields(F& f) {
    f(fid);
    f(offset);
    f(count);
  }
};
// data: packed entries, see DirentWriter / ParseDirents in codec.h.
struct Rreaddir {
  FUN_P9_MSG(Rreaddir);
  Data data;
  template <class F>
  void Fields(F& f) {
    f(data);
  }
};
struct Tfsync {
  FUN_P9_MSG(Tfsync);
  uint32_t fid = 0, datasync = 0;
  template <class F>
  void Fields(F& f) {
    f(fid);
    f(datasync);
  }
};
struct Rfsync {
  FUN_P9_MSG(Rfsync);
  template <class F>
  void Fields(F&) {}
};
struct Tlock {
  FUN_P9_MSG(Tlock);
  uint32_t fid = 0;
  uint8_t type = 0;
  uint32_t flags = 0;
  uint64_t start = 0, length = 0;
  uint32_t proc_id = 0;
  std::string client_id;
  template <class F>
  void Fields(F& f) {
    f(fid);
    f(type);
    f(flags);
    f(start);
    f(length);
    f(proc_id);
    f(client_id);
  }
};
struct Rlock {
  FUN_P9_MSG(Rlock);
  uint8_t status = 0;
  template <class F>
  void Fields(F& f) {
    f(status);
  }
};
struct Tgetlock {
  FUN_P9_MSG(Tgetlock);
  uint32_t fid = 0;
  uint8_t type = 0;
  uint64_t start = 0, length = 0;
  uint32_t proc_id = 0;
  std::string client_id;
  template <class F>
  void Fields(F& f) {
    f(fid);
    f(type);
    f(start);
    f(length);
    f(proc_id);
    f(client_id);
  }
};
struct Rgetlock {
  FUN_P9_MSG(Rgetlock);
  uint8_t type = 0;
  uint64_t start = 0, length = 0;
  uint32_t proc_id = 0;
  std::string client_id;
  template <class F>
  void Fields(F& f) {
    f(type);
    f(start);
    f(length);
    f(proc_id);
    f(client_id);
  }
};
struct Tlink {
  FUN_P9_MSG(Tlink);
  uint32_t dfid = 0, fid = 0;
  std::string name;
  template <class F>
  void Fields(F& f) {
    f(dfid);
    f(fid);
    f(name);
  }
};
struct Rlink {
  FUN_P9_MSG(Rlink);
  template <class F>
  void Fields(F&) {}
};
struct Tmkdir {
  FUN_P9_MSG(Tmkdir);
  uint32_t dfid = 0;
  std::string name;
  uint32_t mode = 0, gid = 0;
  template <class F>
  void Fields(F& f) {
    f(dfid);
    f(name);
    f(mode);
    f(gid);
  }
};
struct Rmkdir {
  FUN_P9_MSG(Rmkdir);
  Qid qid;
  template <class F>
  void Fields(F& f) {
    f(qid);
  }
};
struct Trenameat {
  FUN_P9_MSG(Trenameat);
  uint32_t olddirfid = 0;
  std::string oldname;
  uint32_t newdirfid = 0;
  std::string newname;
  template <class F>
  void Fields(F& f) {
    f(olddirfid);
    f(oldname);
    f(newdirfid);
    f(newname);
  }
};
struct Rrenameat {
  FUN_P9_MSG(Rrenameat);
  template <class F>
  void Fields(F&) {}
};
struct Tunlinkat {
  FUN_P9_MSG(Tunlinkat);
  uint32_t dirfd = 0;
  std::string name;
  uint32_t flags = 0;
  template <class F>
  void Fields(F& f) {
    f(dirfd);
    f(name);
    f(flags);
  }
};
struct Runlinkat {
  FUN_P9_MSG(Runlinkat);
  template <class F>
  void Fields(F&) {}
};
struct Tversion {
  FUN_P9_MSG(Tversion);
  uint32_t msize = 0;
  std::string version;
  template <class F>
  void Fields(F& f) {
    f(msize);
    f(version);
  }
};
struct Rversion {
  FUN_P9_MSG(Rversion);
  uint32_t msize = 0;
  std::string version;
  template <class F>
  void Fields(F& f) {
    f(msize);
    f(version);
  }
};
struct Tauth {
  FUN_P9_MSG(Tauth);
  uint32_t afid = 0;
  std::string uname, aname;
  uint32_t n_uname = kNoUid;
  template <class F>
  void Fields(F& f) {
    f(afid);
    f(uname);
    f(aname);
    f(n_uname);
  }
};
struct Rauth {
  FUN_P9_MSG(Rauth);
  Qid aqid;
  template <class F>
  void Fields(F& f) {
    f(aqid);
  }
};
struct Tattach {
  FUN_P9_MSG(Tattach);
  uint32_t fid = 0, afid = kNoFid;
  std::string uname, aname;
  uint32_t n_uname = kNoUid;
  template <class F>
  void Fields(F& f) {
    f(fid);
    f(afid);
    f(uname);
    f(aname);
    f(n_uname);
  }
};
struct Rattach {
  FUN_P9_MSG(Rattach);
  Qid qid;
  template <class F>
  void Fields(F& f) {
    f(qid);
  }
};
// Legacy 9P2000 error (a .L server never sends it; decoded for completeness).
struct Rerror {
  FUN_P9_MSG(Rerror);
  std::string ename;
  template <class F>
  void Fields(F& f) {
    f(ename);
  }
};
struct Tflush {
  FUN_P9_MSG(Tflush);
  uint16_t oldtag = 0;
  template <class F>
  void Fields(F& f) {
    f(oldtag);
  }
};
struct Rflush {
  FUN_P9_MSG(Rflush);
  template <class F>
  void Fields(F&) {}
};
struct Twalk {
  FUN_P9_MSG(Twalk);
  uint32_t fid = 0, newfid = 0;
  std::vector<std::string> wnames;  // at most 16
  template <class F>
  void Fields(F& f) {
    f(fid);
    f(newfid);
    f(wnames);
  }
};
struct Rwalk {
  FUN_P9_MSG(Rwalk);
  std::vector<Qid> wqids;  // at most 16
  template <class F>
  void Fields(F& f) {
    f(wqids);
  }
};
struct Tread {
  FUN_P9_MSG(Tread);
  uint32_t fid = 0;
  uint64_t offset = 0;
  uint32_t count = 0;
  template <class F>
  void Fields(F& f) {
    f(fid);
    f(offset);
    f(count);
  }
};
struct Rread {
  FUN_P9_MSG(Rread);
  Data data;
  template <class F>
  void Fields(F& f) {
    f(data);
  }
};
struct Twrite {
  FUN_P9_MSG(Twrite);
  uint32_t fid = 0;
  uint64_t offset = 0;
  Data data;
  template <class F>
  void Fields(F& f) {
    f(fid);
    f(offset);
    f(data);
  }
};
struct Rwrite {
  FUN_P9_MSG(Rwrite);
  uint32_t count = 0;
  template <class F>
  void Fields(F& f) {
    f(count);
  }
};
struct Tclunk {
  FUN_P9_MSG(Tclunk);
  uint32_t fid = 0;
  template <class F>
  void Fields(F& f) {
    f(fid);
  }
};
struct Rclunk {
  FUN_P9_MSG(Rclunk);
  template <class F>
  void Fields(F&) {}
};
struct Tremove {
  FUN_P9_MSG(Tremove);
  uint32_t fid = 0;
  template <class F>
  void Fields(F& f) {
    f(fid);
  }
};
struct Rremove {
  FUN_P9_MSG(Rremove);
  template <class F>
  void Fields(F&) {}
};

#undef FUN_P9_MSG

using Message =
    std::variant<Rlerror, Tstatfs, Rstatfs, Tlopen, Rlopen, Tlcreate, Rlcreate, Tsymlink, Rsymlink,
                 Tmknod, Rmknod, Trename, Rrename, Treadlink, Rreadlink, Tgetattr, Rgetattr,
                 Tsetattr, Rsetattr, Txattrwalk, Rxattrwalk, Txattrcreate, Rxattrcreate, Treaddir,
                 Rreaddir, Tfsync, Rfsync, Tlock, Rlock, Tgetlock, Rgetlock, Tlink, Rlink, Tmkdir,
                 Rmkdir, Trenameat, Rrenameat, Tunlinkat, Runlinkat, Tversion, Rversion, Tauth,
                 Rauth, Tattach, Rattach, Rerror, Tflush, Rflush, Twalk, Rwalk, Tread, Rread,
                 Twrite, Rwrite, Tclunk, Rclunk, Tremove, Rremove>;

MsgType TypeOf(const Message& m);

}  // namespace fun::p9

// The DNS codec on packets built byte by byte here, and on answers a real dnsmasq 2.90 sent
// (captured with its --address, --server=/domain/ and --cname options).
#include "lib/net/dns.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

namespace fun::dns {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Hex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

std::string Bytes(std::initializer_list<int> bytes) {
  std::string out;
  for (int b : bytes) out.push_back(static_cast<char>(b));
  return out;
}

// A name as labels: "ok.fun.test" -> 02 ok 03 fun 04 test 00.
std::string Labels(std::string_view name) {
  std::string out;
  size_t start = 0;
  while (start < name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string_view::npos) dot = name.size();
    out.push_back(static_cast<char>(dot - start));
    out.append(name.substr(start, dot - start));
    start = dot + 1;
  }
  out.push_back('\0');
  return out;
}

std::string Header(uint16_t id, uint16_t flags, uint16_t qd, uint16_t an, uint16_t ns = 0,
                   uint16_t ar = 0) {
  return Bytes({id >> 8, id & 0xff, flags >> 8, flags & 0xff, qd >> 8, qd & 0xff, an >> 8,
                an & 0xff, ns >> 8, ns & 0xff, ar >> 8, ar & 0xff});
}

// type, class IN, TTL, RDLENGTH.
std::string Fixed(uint16_t type, uint32_t ttl, uint16_t rdlength) {
  return Bytes({type >> 8, type & 0xff, 0, 1, static_cast<int>(ttl >> 24),
                static_cast<int>((ttl >> 16) & 0xff), static_cast<int>((ttl >> 8) & 0xff),
                static_cast<int>(ttl & 0xff), rdlength >> 8, rdlength & 0xff});
}

constexpr uint16_t kResponseFlags = 0x8180;  // QR, RD, RA, NOERROR
constexpr int kPtrToQuestion = 0x0c;         // the question's name starts right after the header

// --- queries ------------------------------------------------------------------------------

TEST(DnsQuery, IsTheHeaderAndOneQuestionAsRfc1035LaysThemOut) {
  auto q = BuildQuery(0x1234, "ok.fun.test", kTypeA);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(*q, Hex("123401000001000000000000"
                    "026f6b0366756e047465737400"
                    "00010001"));
  auto aaaa = BuildQuery(0xbeef, "Deb.Debian.org.", kTypeAaaa);
  ASSERT_TRUE(aaaa.ok()) << aaaa.status();
  EXPECT_EQ(*aaaa, Header(0xbeef, 0x0100, 1, 0) + Labels("Deb.Debian.org") + Bytes({0, 28, 0, 1}));
}

TEST(DnsQuery, AsksOnlyForAddresses) {
  auto q = BuildQuery(1, "ok.fun.test", kTypeCname);
  EXPECT_EQ(q.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(q.status().message(), HasSubstr("only A and AAAA"));
}

TEST(DnsQuery, TakesHostNamesOnly) {
  const std::string l63(63, 'a');
  const std::string n253 = l63 + "." + l63 + "." + l63 + "." + std::string(61, 'b');
  ASSERT_EQ(n253.size(), 253u);
  for (std::string ok : {std::string("localhost"), std::string("a"), std::string("x-1.example"),
                         std::string("1.2.3.4"), l63 + ".com", n253, n253 + "."}) {
    EXPECT_TRUE(ValidateHostName(ok).ok()) << ok;
    EXPECT_TRUE(BuildQuery(7, ok, kTypeA).ok()) << ok;
  }
  struct Bad {
    std::string name;
    std::string why;
  };
  for (const Bad& b : std::initializer_list<Bad>{
           {"", "it is empty"},
           {".", "it is empty"},
           {"a..b", "an empty label"},
           {".a", "an empty label"},
           {"a..", "an empty label"},
           {l63 + "a.com", "has 64 characters, more than 63"},
           {n253 + "b", "254 characters, more than 253"},
           {"under_score.example", "other than letters, digits and '-'"},
           {"sp ace.example", "other than letters, digits and '-'"},
           {"caf\xc3\xa9.example", "label \"caf??\" holds a character"},
           {std::string("nul\0.example", 12), "label \"nul?\" holds"},
           {"-lead.example", "starts or ends with '-'"},
           {"trail-.example", "starts or ends with '-'"},
       }) {
    Status s = ValidateHostName(b.name);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << b.name;
    EXPECT_THAT(s.message(), HasSubstr(b.why)) << b.name;
    EXPECT_THAT(s.message(), HasSubstr("is not a host name")) << b.name;
    EXPECT_FALSE(BuildQuery(7, b.name, kTypeA).ok()) << b.name;
  }
}

// --- answers from a real dnsmasq -----------------------------------------------------------

TEST(DnsResponse, ReadsARealAnswerWithACompressedOwnerName) {
  // dnsmasq --address=/ok.fun.test/192.0.2.7, asked ok.fun.test A.
  auto r = ParseResponse(Hex("123485800001000100000000026f6b0366756e04746573740000010001"
                             "c00c00010001000000000004c0000207"),
                         0x1234);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rcode, kRcodeNoError);
  EXPECT_TRUE(r->authoritative);
  EXPECT_TRUE(r->recursion_available);
  EXPECT_FALSE(r->truncated);
  EXPECT_EQ(r->question_name, "ok.fun.test");
  EXPECT_EQ(r->question_type, kTypeA);
  EXPECT_EQ(r->answer_count, 1);
  ASSERT_EQ(r->addresses.size(), 1u);
  EXPECT_EQ(r->addresses[0].type, kTypeA);
  EXPECT_EQ(r->addresses[0].owner, "ok.fun.test");
  EXPECT_EQ(r->addresses[0].address, "192.0.2.7");
  EXPECT_EQ(r->addresses[0].ttl, 0u);
}

TEST(DnsResponse, ReadsARealAaaaAnswer) {
  auto r = ParseResponse(Hex("123485800001000100000000026f6b0366756e047465737400001c0001"
                             "c00c001c000100000000001020010db8000000000000000000000007"),
                         0x1234);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->addresses.size(), 1u);
  EXPECT_EQ(r->addresses[0].type, kTypeAaaa);
  EXPECT_EQ(r->addresses[0].address, "2001:db8::7");
  EXPECT_EQ(r->question_type, kTypeAaaa);
}

TEST(DnsResponse, ReadsRealNxdomainAndRefusedAnswers) {
  // --server=/nx.fun.test/: only local names there, so NXDOMAIN.
  auto nx =
      ParseResponse(Hex("123481830001000000000000026e780366756e04746573740000010001"), 0x1234);
  ASSERT_TRUE(nx.ok()) << nx.status();
  EXPECT_EQ(nx->rcode, kRcodeNxDomain);
  EXPECT_EQ(RcodeName(nx->rcode), "NXDOMAIN");
  EXPECT_TRUE(nx->addresses.empty());
  EXPECT_EQ(nx->question_name, "nx.fun.test");
  // No upstream for other names: REFUSED.
  auto refused = ParseResponse(
      Hex("12348185000100000000000007756e6b6e6f776e076578616d706c650000010001"), 0x1234);
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(RcodeName(refused->rcode), "REFUSED");
  EXPECT_EQ(refused->question_name, "unknown.example");
}

TEST(DnsResponse, ReadsARealCnameAnswer) {
  // --cname=alias.fun.test,ok.fun.test (dnsmasq writes the target in full, uncompressed).
  auto r = ParseResponse(Hex("12348580000100010000000005616c6961730366756e04746573740000010001"
                             "c00c0005000100000000000d026f6b0366756e047465737400"),
                         0x1234);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->addresses.empty());
  ASSERT_EQ(r->aliases.size(), 1u);
  EXPECT_EQ(r->aliases[0].owner, "alias.fun.test");
  EXPECT_EQ(r->aliases[0].target, "ok.fun.test");
}

// --- answers built by hand -----------------------------------------------------------------

TEST(DnsResponse, FollowsPointersIntoTheMiddleOfNamesAndThroughChains) {
  // deb.debian.org CNAME cdn.debian.org, whose name is a label and a pointer into the middle of
  // the question's name; then two A records whose owner is a pointer to that CNAME's target.
  std::string m = Header(0x5a17, kResponseFlags, 1, 3);
  m += Labels("deb.debian.org") + Bytes({0, 1, 0, 1});  // question at 12; "debian.org" at 16
  const size_t cname_rdata = m.size() + 2 + 10;
  // The CNAME's target "cdn.debian.org": "cdn" then a pointer to "debian.org" at byte 16.
  std::string target = Bytes({3, 'c', 'd', 'n', 0xc0, 16});
  m += Bytes({0xc0, kPtrToQuestion}) +
       Fixed(kTypeCname, 300, static_cast<uint16_t>(target.size())) + target;
  // The A records' owner: a pointer to the CNAME's target (itself a label and a pointer).
  for (int last : {1, 2}) {
    m += Bytes({0xc0, static_cast<int>(cname_rdata)}) + Fixed(kTypeA, 60, 4) +
         Bytes({192, 0, 2, last});
  }
  auto r = ParseResponse(m, 0x5a17);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->aliases.size(), 1u);
  EXPECT_EQ(r->aliases[0].owner, "deb.debian.org");
  EXPECT_EQ(r->aliases[0].target, "cdn.debian.org");
  ASSERT_EQ(r->addresses.size(), 2u);
  EXPECT_EQ(r->addresses[0].owner, "cdn.debian.org");
  EXPECT_EQ(r->addresses[0].address, "192.0.2.1");
  EXPECT_EQ(r->addresses[0].ttl, 60u);
  EXPECT_EQ(r->addresses[1].address, "192.0.2.2");
}

TEST(DnsResponse, SkipsAuthorityAndAdditionalRecordsAndOtherTypesAndClasses) {
  std::string m = Header(1, kResponseFlags, 1, 2, 1, 1);
  m += Labels("ok.fun.test") + Bytes({0, 1, 0, 1});
  // Answer 1: a TXT record (skipped). Answer 2: an A record of class CH (skipped).
  m += Bytes({0xc0, kPtrToQuestion}) + Fixed(16, 5, 3) + Bytes({2, 'h', 'i'});
  m += Bytes({0xc0, kPtrToQuestion, 0, 1, 0, 3, 0, 0, 0, 5, 0, 4, 10, 0, 0, 1});
  // Authority: an A record (not an answer). Additional: an EDNS OPT pseudo-record.
  m += Bytes({0xc0, kPtrToQuestion}) + Fixed(kTypeA, 5, 4) + Bytes({10, 0, 0, 2});
  m += Bytes({0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0});
  auto r = ParseResponse(m, 1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->addresses.empty());
  EXPECT_TRUE(r->aliases.empty());
  // The same with the OPT record cut: the additional section runs past the end.
  auto cut = ParseResponse(m.substr(0, m.size() - 1), 1);
  EXPECT_EQ(cut.status().code(), Code::kDataLoss);
  EXPECT_THAT(cut.status().message(), HasSubstr("record's type, class, TTL and length"));
}

TEST(DnsResponse, ATruncatedAnswerKeepsTheRecordsThatFitted) {
  // TC set, ANCOUNT 3, one A record present: the message ends where the server cut it.
  std::string m = Header(9, kResponseFlags | 0x0200, 1, 3);
  m += Labels("ok.fun.test") + Bytes({0, 1, 0, 1});
  m += Bytes({0xc0, kPtrToQuestion}) + Fixed(kTypeA, 1, 4) + Bytes({192, 0, 2, 9});
  auto r = ParseResponse(m, 9);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->truncated);
  EXPECT_EQ(r->answer_count, 3);
  ASSERT_EQ(r->addresses.size(), 1u);
  EXPECT_EQ(r->addresses[0].address, "192.0.2.9");
  // A header alone with TC (what some servers send): fine, nothing in it.
  auto bare = ParseResponse(Header(9, kResponseFlags | 0x0200, 1, 3), 9);
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_FALSE(bare->question_name.has_value());
  // A record cut in half is malformed even with TC.
  auto half = ParseResponse(m.substr(0, m.size() - 2), 9);
  EXPECT_EQ(half.status().code(), Code::kDataLoss);
  EXPECT_THAT(half.status().message(), HasSubstr("A record data needs 4 bytes, 2 left"));
  // Without TC, a missing record is malformed.
  std::string no_tc = m;
  no_tc[2] = static_cast<char>(0x81);
  no_tc[3] = static_cast<char>(0x80);
  EXPECT_EQ(ParseResponse(no_tc, 9).status().code(), Code::kDataLoss);
}

TEST(DnsResponse, EscapesLabelBytesThatAreNotPrintable) {
  std::string m = Header(3, kResponseFlags | kRcodeNxDomain, 1, 0);
  m += Bytes({6, 'a', '.', 'b', 0, '\\', 0x1b, 0}) + Bytes({0, 1, 0, 1});
  auto r = ParseResponse(m, 3);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->question_name, "a\\.b\\000\\\\\\027");
  // The root name.
  auto root = ParseResponse(Header(3, kResponseFlags, 1, 0) + Bytes({0, 0, 1, 0, 1}), 3);
  ASSERT_TRUE(root.ok()) << root.status();
  EXPECT_EQ(root->question_name, ".");
}

struct Garbage {
  std::string name;
  std::string bytes;
  std::string says;
};

std::vector<Garbage> GarbageCases() {
  const std::string q = Labels("ok.fun.test") + Bytes({0, 1, 0, 1});
  const std::string ok_header = Header(7, kResponseFlags, 1, 1);
  std::vector<Garbage> g = {
      {"empty", "", "0 bytes, shorter than a header"},
      {"short", Bytes({0, 7, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0}), "11 bytes, shorter than a header"},
      {"a query", *BuildQuery(7, "ok.fun.test", kTypeA), "QR is clear"},
      {"opcode STATUS", Header(7, 0x9000, 0, 0), "opcode 2"},
      {"question runs past the end", Header(7, kResponseFlags, 1, 0) + Bytes({3, 'o', 'k'}),
       "a label needs 3 bytes, 2 left at byte 13"},
      {"question without type", Header(7, kResponseFlags, 1, 0) + Labels("ok") + Bytes({0, 1}),
       "a question's type and class needs 4 bytes, 2 left"},
      {"pointer to itself", Header(7, kResponseFlags, 1, 0) + Bytes({0xc0, 12, 0, 1, 0, 1}),
       "more than 32 compression pointers (a loop) at byte 12"},
      {"two pointers in a loop",
       Header(7, kResponseFlags, 1, 0) + Bytes({0xc0, 14, 0xc0, 12, 0, 1, 0, 1}),
       "compression pointers (a loop)"},
      {"pointer past the end", Header(7, kResponseFlags, 1, 0) + Bytes({0xc0, 200, 0, 1, 0, 1}),
       "a compression pointer to byte 200, past the end (18)"},
      {"pointer cut", Header(7, kResponseFlags, 1, 0) + Bytes({0xc0}),
       "a compression pointer needs 2 bytes, 1 left"},
      {"extended label type", Header(7, kResponseFlags, 1, 0) + Bytes({0x41, 0, 0, 1, 0, 1}),
       "label type 0x40"},
      {"A of 5 bytes",
       ok_header + q + Bytes({0xc0, kPtrToQuestion}) + Fixed(kTypeA, 1, 5) + Bytes({1, 2, 3, 4, 5}),
       "an A record of 5 bytes, not 4"},
      {"AAAA of 4 bytes",
       ok_header + q + Bytes({0xc0, kPtrToQuestion}) + Fixed(kTypeAaaa, 1, 4) + Bytes({1, 2, 3, 4}),
       "an AAAA record of 4 bytes, not 16"},
      {"rdata past the end",
       ok_header + q + Bytes({0xc0, kPtrToQuestion}) + Fixed(kTypeA, 1, 4) + Bytes({1, 2}),
       "A record data needs 4 bytes, 2 left"},
      {"CNAME name overruns its record",
       ok_header + q + Bytes({0xc0, kPtrToQuestion}) + Fixed(kTypeCname, 1, 1) + Bytes({0xc0, 12}),
       "a CNAME record whose name takes 2 bytes of its 1"},
      {"random bytes", Hex("00071c00d2e4ff0101ff7b00993a"), "QR is clear"},
  };
  // A name of 257 bytes on the wire: four labels of 63 bytes and the root.
  std::string longname = Header(7, kResponseFlags, 1, 0);
  std::string l(63, 'x');
  longname += Bytes({63}) + l + Bytes({63}) + l + Bytes({63}) + l + Bytes({63}) + l + Bytes({0});
  longname += Bytes({0, 1, 0, 1});
  g.push_back({"name of 257 bytes", longname, "a name longer than 255 bytes"});
  return g;
}

TEST(DnsResponse, RefusesGarbageWithAClearError) {
  for (const Garbage& g : GarbageCases()) {
    auto r = ParseResponse(g.bytes, 7);
    if (g.says.empty()) {
      EXPECT_TRUE(r.ok()) << g.name << ": " << r.status();
      continue;
    }
    ASSERT_FALSE(r.ok()) << g.name;
    EXPECT_EQ(r.status().code(), Code::kDataLoss) << g.name;
    EXPECT_THAT(r.status().message(), HasSubstr("malformed DNS response")) << g.name;
    EXPECT_THAT(r.status().message(), HasSubstr(g.says)) << g.name;
  }
}

TEST(DnsResponse, RefusesAnAnswerToAnotherQuery) {
  auto r = ParseResponse(Header(0x1111, kResponseFlags, 0, 0), 0x2222);
  EXPECT_EQ(r.status().code(), Code::kDataLoss);
  EXPECT_THAT(r.status().message(),
              HasSubstr("DNS response id 0x1111 is not the query's (0x2222)"));
}

// --- names ---------------------------------------------------------------------------------

TEST(DnsNames, CompareCaseInsensitivelyWithoutTheTrailingDot) {
  EXPECT_TRUE(SameName("Deb.Debian.ORG.", "deb.debian.org"));
  EXPECT_FALSE(SameName("deb.debian.org", "deb.debian.or"));
  EXPECT_FALSE(SameName("a\\.b", "a.b"));
  EXPECT_THAT((std::vector<std::string>{TypeName(kTypeA), TypeName(kTypeAaaa), TypeName(kTypeCname),
                                        TypeName(65)}),
              ElementsAre("A", "AAAA", "CNAME", "TYPE65"));
  EXPECT_THAT(
      (std::vector<std::string>{RcodeName(0), RcodeName(1), RcodeName(2), RcodeName(3),
                                RcodeName(4), RcodeName(5), RcodeName(9)}),
      ElementsAre("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "RCODE9"));
}

}  // namespace
}  // namespace fun::dns

#include "lib/base/instance_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace fun {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// The defaults of a Linux host whose user is alice.
InstanceConfig LinuxDefaults() {
  return DefaultInstanceConfig({.is_macos = false, .is_arm64 = false, .home_dir = "/home/alice"});
}

// The error message ParseInstanceConfig gives for `json` (and "" if it parses).
std::string ErrorFor(std::string_view json, std::string_view source_name = "config.json") {
  StatusOr<InstanceConfig> config = ParseInstanceConfig(json, LinuxDefaults(), source_name);
  if (config.ok()) return "";
  EXPECT_EQ(config.status().code(), Code::kInvalidArgument) << config.status();
  EXPECT_THAT(config.status().message(), Not(HasSubstr("\n")));
  return config.status().message();
}

InstanceConfig FullConfig() {
  InstanceConfig c;
  c.name = "work-vm_2";
  c.backend = Backend::kQemu;
  c.accel = Accel::kTcg;
  c.cpus = 8;
  c.memory_mib = 8192;
  c.disk_gib = 100;
  c.shares = {
      Share{.host_path = "/Users/alice", .guest_path = "/Users/alice", .tag = "users-alice"},
      Share{.host_path = "/opt/data", .guest_path = "/data", .read_only = true, .tag = "data"},
  };
  c.ports = {
      PortForward{.host_ip = "127.0.0.1", .host_port = 8080, .guest_port = 80},
      PortForward{
          .host_ip = "::1", .host_port = 5353, .guest_port = 53, .protocol = Protocol::kUdp},
      PortForward{.host_ip = "0.0.0.0", .host_port = 2222, .guest_port = 22},
  };
  return c;
}

// --- Names ----------------------------------------------------------------------------------

TEST(InstanceConfigNamesTest, BackendNamesRoundTrip) {
  for (Backend b : {Backend::kQemu, Backend::kHyperkit, Backend::kNative}) {
    StatusOr<Backend> parsed = ParseBackend(BackendName(b));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, b);
  }
  EXPECT_EQ(BackendName(Backend::kHyperkit), "hyperkit");
}

TEST(InstanceConfigNamesTest, AccelNamesRoundTrip) {
  for (Accel a : {Accel::kAuto, Accel::kKvm, Accel::kHvf, Accel::kTcg, Accel::kNone}) {
    StatusOr<Accel> parsed = ParseAccel(AccelName(a));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, a);
  }
}

TEST(InstanceConfigNamesTest, ProtocolNamesRoundTrip) {
  EXPECT_EQ(ProtocolName(Protocol::kTcp), "tcp");
  EXPECT_EQ(ProtocolName(Protocol::kUdp), "udp");
  EXPECT_EQ(*ParseProtocol("udp"), Protocol::kUdp);
  EXPECT_FALSE(ParseProtocol("UDP").ok());
}

TEST(InstanceConfigNamesTest, UnknownNamesListChoicesAndSuggest) {
  EXPECT_EQ(ParseBackend("qemux").status().message(),
            R"("qemux" is not a known backend, expected one of "qemu", "hyperkit", "native" )"
            R"((did you mean "qemu"?))");
  EXPECT_EQ(ParseBackend("virtualbox").status().message(),
            R"("virtualbox" is not a known backend, expected one of "qemu", "hyperkit", "native")");
  EXPECT_EQ(ParseAccel("KVM").status().message(),
            R"("KVM" is not a known accelerator, expected one of "auto", "kvm", "hvf", "tcg", )"
            R"("none" (did you mean "kvm"?))");
  EXPECT_EQ(ParseAccel("").status().code(), Code::kInvalidArgument);
}

TEST(InstanceConfigNamesTest, AccelSupportPerBackend) {
  EXPECT_TRUE(IsAccelSupported(Backend::kQemu, Accel::kAuto));
  EXPECT_TRUE(IsAccelSupported(Backend::kQemu, Accel::kKvm));
  EXPECT_TRUE(IsAccelSupported(Backend::kQemu, Accel::kHvf));
  EXPECT_TRUE(IsAccelSupported(Backend::kQemu, Accel::kTcg));
  EXPECT_FALSE(IsAccelSupported(Backend::kQemu, Accel::kNone));
  EXPECT_TRUE(IsAccelSupported(Backend::kHyperkit, Accel::kAuto));
  EXPECT_TRUE(IsAccelSupported(Backend::kHyperkit, Accel::kHvf));
  EXPECT_FALSE(IsAccelSupported(Backend::kHyperkit, Accel::kTcg));
  EXPECT_FALSE(IsAccelSupported(Backend::kHyperkit, Accel::kKvm));
  EXPECT_TRUE(IsAccelSupported(Backend::kNative, Accel::kAuto));
  EXPECT_TRUE(IsAccelSupported(Backend::kNative, Accel::kNone));
  EXPECT_FALSE(IsAccelSupported(Backend::kNative, Accel::kKvm));
}

TEST(InstanceConfigNamesTest, InstanceNames) {
  for (std::string_view good :
       {"default", "a", "0", "dev-1_x", "abcdefghijklmnopqrstuvwxyz012345"}) {
    EXPECT_TRUE(ValidateInstanceName(good).ok()) << good;
  }
  for (std::string_view bad :
       {"", "-a", "_a", "A", "my vm", "a/b", "..", "a.b", "abcdefghijklmnopqrstuvwxyz0123456"}) {
    EXPECT_FALSE(ValidateInstanceName(bad).ok()) << bad;
  }
  EXPECT_EQ(ValidateInstanceName("My VM").message(),
            R"("My VM" is not a valid instance name, expected a name of 1 to 32 characters from )"
            R"(a-z, 0-9, "_" and "-", starting with a-z or 0-9)");
}

// --- Defaults -------------------------------------------------------------------------------

TEST(InstanceConfigDefaultsTest, MacX86UsesHyperkit) {
  InstanceConfig c =
      DefaultInstanceConfig({.is_macos = true, .is_arm64 = false, .home_dir = "/Users/alice"});
  EXPECT_EQ(c.backend, Backend::kHyperkit);
  EXPECT_EQ(c.accel, Accel::kAuto);
}

TEST(InstanceConfigDefaultsTest, MacArm64UsesQemu) {
  InstanceConfig c =
      DefaultInstanceConfig({.is_macos = true, .is_arm64 = true, .home_dir = "/Users/alice"});
  EXPECT_EQ(c.backend, Backend::kQemu);
}

TEST(InstanceConfigDefaultsTest, LinuxUsesQemu) {
  EXPECT_EQ(DefaultInstanceConfig({.is_macos = false, .is_arm64 = false}).backend, Backend::kQemu);
  EXPECT_EQ(DefaultInstanceConfig({.is_macos = false, .is_arm64 = true}).backend, Backend::kQemu);
}

TEST(InstanceConfigDefaultsTest, SharesGoOverVsockOnLinuxAndSerialPortsOnMacos) {
  EXPECT_EQ(DefaultInstanceConfig({.is_macos = false}).share_transport, "vsock");
  EXPECT_EQ(DefaultInstanceConfig({.is_macos = true, .is_arm64 = true}).share_transport, "serial");
  // A config.json without the key gets the machine's default.
  auto c = ParseInstanceConfig(R"({"cpus": 4})", DefaultInstanceConfig({.is_macos = false}));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->share_transport, "vsock");
}

TEST(InstanceConfigDefaultsTest, SizesAndName) {
  InstanceConfig c = LinuxDefaults();
  EXPECT_EQ(c.name, "default");
  EXPECT_EQ(c.cpus, 2);
  EXPECT_EQ(c.memory_mib, 2048);
  EXPECT_EQ(c.disk_gib, 20);
  EXPECT_TRUE(c.ports.empty());
}

TEST(InstanceConfigDefaultsTest, HomeIsSharedAtTheSamePath) {
  InstanceConfig c =
      DefaultInstanceConfig({.is_macos = true, .is_arm64 = true, .home_dir = "/Users/alice"});
  ASSERT_EQ(c.shares.size(), 1u);
  EXPECT_EQ(c.shares[0], (Share{.host_path = "/Users/alice",
                                .guest_path = "/Users/alice",
                                .read_only = false,
                                .tag = "users-alice"}));
}

TEST(InstanceConfigDefaultsTest, NoHomeNoShare) {
  EXPECT_TRUE(DefaultInstanceConfig({.is_macos = false, .home_dir = ""}).shares.empty());
  EXPECT_TRUE(DefaultInstanceConfig({.is_macos = false, .home_dir = "relative"}).shares.empty());
  EXPECT_TRUE(DefaultInstanceConfig({.is_macos = false, .home_dir = "/"}).shares.empty());
}

TEST(InstanceConfigDefaultsTest, DefaultsAreNormalized) {
  InstanceConfig c = LinuxDefaults();
  StatusOr<InstanceConfig> normalized = NormalizeInstanceConfig(c);
  ASSERT_TRUE(normalized.ok()) << normalized.status();
  EXPECT_EQ(*normalized, c);
}

// --- Parsing: good input --------------------------------------------------------------------

TEST(ParseInstanceConfigTest, EmptyObjectGivesTheDefaults) {
  StatusOr<InstanceConfig> c = ParseInstanceConfig("{}", LinuxDefaults());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(*c, LinuxDefaults());
}

TEST(ParseInstanceConfigTest, MissingKeysKeepTheDefaults) {
  StatusOr<InstanceConfig> c =
      ParseInstanceConfig(R"({"cpus": 6, "accel": "kvm"})", LinuxDefaults());
  ASSERT_TRUE(c.ok()) << c.status();
  InstanceConfig expected = LinuxDefaults();
  expected.cpus = 6;
  expected.accel = Accel::kKvm;
  EXPECT_EQ(*c, expected);
}

TEST(ParseInstanceConfigTest, SharesKeyReplacesTheDefaultShares) {
  StatusOr<InstanceConfig> c = ParseInstanceConfig(R"({"shares": []})", LinuxDefaults());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->shares.empty());
}

TEST(ParseInstanceConfigTest, FullConfigRoundTrips) {
  const InstanceConfig full = FullConfig();
  const std::string text = SerializeInstanceConfig(full);
  StatusOr<InstanceConfig> parsed = ParseInstanceConfig(text, LinuxDefaults());
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << text;
  EXPECT_EQ(*parsed, full);
  EXPECT_EQ(SerializeInstanceConfig(*parsed), text);
}

TEST(ParseInstanceConfigTest, ShareDefaultsAreFilledIn) {
  StatusOr<InstanceConfig> c = ParseInstanceConfig(
      R"({"shares": [{"host_path": "/Users/alice/src"}, {"host_path": "/users/Alice/src"},
                     {"host_path": "/data", "tag": "x"}, {"host_path": "/x"}]})",
      LinuxDefaults());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->shares.size(), 4u);
  EXPECT_EQ(c->shares[0], (Share{.host_path = "/Users/alice/src",
                                 .guest_path = "/Users/alice/src",
                                 .read_only = false,
                                 .tag = "users-alice-src"}));
  EXPECT_EQ(c->shares[1].tag, "users-alice-src-2");  // Same derived tag: made unique.
  EXPECT_EQ(c->shares[2].tag, "x");
  EXPECT_EQ(c->shares[3].tag, "x-2");  // Derived tags avoid explicit ones, wherever they are.
}

TEST(ParseInstanceConfigTest, PortDefaultsAreFilledIn) {
  StatusOr<InstanceConfig> c =
      ParseInstanceConfig(R"({"ports": [{"host_port": 8080, "guest_port": 80}]})", LinuxDefaults());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->ports.size(), 1u);
  EXPECT_EQ(c->ports[0], (PortForward{.host_ip = "127.0.0.1",
                                      .host_port = 8080,
                                      .guest_port = 80,
                                      .protocol = Protocol::kTcp}));
}

TEST(ParseInstanceConfigTest, SamePortOnOtherProtocolOrAddressIsFine) {
  EXPECT_EQ(ErrorFor(R"({"ports": [
      {"host_port": 53, "guest_port": 53},
      {"host_port": 53, "guest_port": 53, "protocol": "udp"},
      {"host_ip": "127.0.0.2", "host_port": 53, "guest_port": 53},
      {"host_ip": "::1", "host_port": 53, "guest_port": 53},
      {"host_ip": "::", "host_port": 53, "guest_port": 53, "protocol": "udp"}]})"),
            "");
}

TEST(ParseInstanceConfigTest, ByteOrderMarkIsAccepted) {
  EXPECT_EQ(ErrorFor("\xEF\xBB\xBF{\"cpus\": 3}"), "");
}

// --- Parsing: every field's errors ----------------------------------------------------------

struct BadField {
  std::string json;
  std::string error;
};

void ExpectErrors(const std::vector<BadField>& cases) {
  for (const BadField& c : cases) {
    SCOPED_TRACE(c.json);
    EXPECT_EQ(ErrorFor(c.json), c.error);
  }
}

const std::string kNameRule =
    R"(expected a name of 1 to 32 characters from a-z, 0-9, "_" and "-", starting with a-z or 0-9)";
const std::string kHostPathRule =
    R"(expected an absolute path (starting with "/") without "." or ".." components)";
const std::string kGuestPathRule =
    R"(expected an absolute path other than "/", without "." or ".." components)";
const std::string kTagRule = R"(expected a tag of 1 to 31 characters from a-z, 0-9, "_" and "-")";
const std::string kPortRule = "expected an integer from 1 to 65535";
const std::string kIpRule =
    R"(expected an IPv4 or IPv6 address such as "127.0.0.1", "0.0.0.0" or "::1")";

TEST(ParseInstanceConfigErrorTest, Name) {
  ExpectErrors({
      {R"({"name": "My VM"})", R"(name: "My VM" is not a valid instance name, )" + kNameRule},
      {R"({"name": ""})", R"(name: "" is not a valid instance name, )" + kNameRule},
      {R"({"name": "-x"})", R"(name: "-x" is not a valid instance name, )" + kNameRule},
      {R"({"name": "abcdefghijklmnopqrstuvwxyz0123456"})",
       R"(name: "abcdefghijklmnopqrstuvwxyz0123456" is not a valid instance name, )" + kNameRule},
      {R"({"name": 5})", "name: 5 is an integer, " + kNameRule},
  });
}

TEST(ParseInstanceConfigErrorTest, Backend) {
  ExpectErrors({
      {R"({"backend": "qemux"})",
       R"(backend: "qemux" is not a known backend, expected one of "qemu", "hyperkit", )"
       R"("native" (did you mean "qemu"?))"},
      {R"({"backend": "vbox"})",
       R"(backend: "vbox" is not a known backend, expected one of "qemu", "hyperkit", "native")"},
      {R"({"backend": ["qemu"]})",
       R"(backend: ["qemu"] is an array, expected one of "qemu", "hyperkit", "native")"},
  });
}

TEST(ParseInstanceConfigErrorTest, Accel) {
  ExpectErrors({
      {R"({"accel": "kvn"})",
       R"(accel: "kvn" is not a known accelerator, expected one of "auto", "kvm", "hvf", "tcg", )"
       R"("none" (did you mean "kvm"?))"},
      {R"({"accel": false})",
       R"(accel: false is a boolean, expected one of "auto", "kvm", "hvf", "tcg", "none")"},
  });
}

TEST(ParseInstanceConfigErrorTest, AccelMustSuitTheBackend) {
  ExpectErrors({
      {R"({"backend": "hyperkit", "accel": "tcg"})",
       R"(accel: "tcg" is not supported by backend "hyperkit", expected one of "auto", "hvf")"},
      {R"({"backend": "native", "accel": "kvm"})",
       R"(accel: "kvm" is not supported by backend "native", expected one of "auto", "none")"},
      {R"({"accel": "none"})",
       R"(accel: "none" is not supported by backend "qemu", expected one of "auto", "kvm", )"
       R"("hvf", "tcg")"},
  });
  EXPECT_EQ(ErrorFor(R"({"backend": "hyperkit", "accel": "hvf"})"), "");
  EXPECT_EQ(ErrorFor(R"({"backend": "native", "accel": "none"})"), "");
}

TEST(ParseInstanceConfigErrorTest, Cpus) {
  const std::string rule = "expected an integer from 1 to 64";
  ExpectErrors({
      {R"({"cpus": 0})", "cpus: 0 is out of range, " + rule},
      {R"({"cpus": 65})", "cpus: 65 is out of range, " + rule},
      {R"({"cpus": -3})", "cpus: -3 is out of range, " + rule},
      {R"({"cpus": "4"})", R"(cpus: "4" is a string, )" + rule},
      {R"({"cpus": 4.0})", "cpus: 4.0 is a floating-point number, " + rule},
      {R"({"cpus": 2.5})", "cpus: 2.5 is a floating-point number, " + rule},
      {R"({"cpus": true})", "cpus: true is a boolean, " + rule},
      {R"({"cpus": null})", "cpus: got null, " + rule},
      {R"({"cpus": {"n": 4}})", R"(cpus: {"n":4} is an object, )" + rule},
      {R"({"cpus": 18446744073709551615})", "cpus: 18446744073709551615 is out of range, " + rule},
      {R"({"cpus": -9223372036854775808})", "cpus: -9223372036854775808 is out of range, " + rule},
  });
}

TEST(ParseInstanceConfigErrorTest, MemoryMib) {
  const std::string rule = "expected an integer from 256 to 131072";
  ExpectErrors({
      {R"({"memory_mib": 255})", "memory_mib: 255 is out of range, " + rule},
      {R"({"memory_mib": 131073})", "memory_mib: 131073 is out of range, " + rule},
      {R"({"memory_mib": "2G"})", R"(memory_mib: "2G" is a string, )" + rule},
  });
}

TEST(ParseInstanceConfigErrorTest, DiskGib) {
  const std::string rule = "expected an integer from 1 to 2048";
  ExpectErrors({
      {R"({"disk_gib": 0})", "disk_gib: 0 is out of range, " + rule},
      {R"({"disk_gib": 4096})", "disk_gib: 4096 is out of range, " + rule},
      {R"({"disk_gib": 1e2})", "disk_gib: 100.0 is a floating-point number, " + rule},
  });
}

TEST(ParseInstanceConfigErrorTest, SharesShape) {
  ExpectErrors({
      {R"({"shares": {}})",
       R"(shares: {} is an object, expected an array of objects such as {"host_path": "/src"})"},
      {R"({"shares": ["/src"]})",
       R"(shares[0]: "/src" is a string, expected an object such as {"host_path": "/src", )"
       R"("read_only": true})"},
      {R"({"shares": [{"host_path": "/a", "readonly": true}]})",
       R"(unknown key "readonly" in shares[0] (did you mean "read_only"?))"},
  });
}

TEST(ParseInstanceConfigErrorTest, ShareHostPath) {
  ExpectErrors({
      {R"({"shares": [{"host_path": "/a"}, {"host_path": "rel/b"}]})",
       R"(shares[1].host_path: "rel/b" is a relative path, )" + kHostPathRule},
      {R"({"shares": [{}]})", "shares[0].host_path: missing, " + kHostPathRule},
      {R"({"shares": [{"host_path": ""}]})",
       R"(shares[0].host_path: "" is empty, )" + kHostPathRule},
      {R"({"shares": [{"host_path": "/a/../b"}]})",
       R"(shares[0].host_path: "/a/../b" contains a ".." component, )" + kHostPathRule},
      {R"({"shares": [{"host_path": "/a/./b"}]})",
       R"(shares[0].host_path: "/a/./b" contains a "." component, )" + kHostPathRule},
      {R"({"shares": [{"host_path": "/a\u0000b"}]})",
       R"(shares[0].host_path: "/a\u0000b" contains a NUL character, )" + kHostPathRule},
      {R"({"shares": [{"host_path": 7}]})",
       "shares[0].host_path: 7 is an integer, " + kHostPathRule},
  });
}

TEST(ParseInstanceConfigErrorTest, ShareGuestPath) {
  ExpectErrors({
      {R"({"shares": [{"host_path": "/a", "guest_path": "mnt"}]})",
       R"(shares[0].guest_path: "mnt" is a relative path, )" + kGuestPathRule},
      {R"({"shares": [{"host_path": "/a", "guest_path": "/"}]})",
       R"(shares[0].guest_path: "/" is the root of the VM, )" + kGuestPathRule},
      {R"({"shares": [{"host_path": "/a", "guest_path": ""}]})",
       R"(shares[0].guest_path: "" is empty, )" + kGuestPathRule},
      {R"({"shares": [{"host_path": "/a", "guest_path": null}]})",
       "shares[0].guest_path: got null, " + kGuestPathRule},
  });
}

TEST(ParseInstanceConfigErrorTest, ShareReadOnly) {
  ExpectErrors({
      {R"({"shares": [{"host_path": "/a", "read_only": "yes"}]})",
       R"(shares[0].read_only: "yes" is a string, expected true or false)"},
      {R"({"shares": [{"host_path": "/a", "read_only": 1}]})",
       R"(shares[0].read_only: 1 is an integer, expected true or false)"},
  });
}

TEST(ParseInstanceConfigErrorTest, ShareTag) {
  ExpectErrors({
      {R"({"shares": [{"host_path": "/a", "tag": "My Tag"}]})",
       R"(shares[0].tag: "My Tag" is not a valid tag, )" + kTagRule},
      {R"({"shares": [{"host_path": "/a", "tag": ""}]})",
       R"(shares[0].tag: "" is not a valid tag, )" + kTagRule},
      {R"({"shares": [{"host_path": "/a", "tag": "abcdefghijklmnopqrstuvwxyz012345"}]})",
       R"(shares[0].tag: "abcdefghijklmnopqrstuvwxyz012345" is not a valid tag, )" + kTagRule},
      {R"({"shares": [{"host_path": "/a", "tag": 1}]})",
       "shares[0].tag: 1 is an integer, " + kTagRule},
  });
}

TEST(ParseInstanceConfigErrorTest, ShareCache) {
  ExpectErrors({
      {R"({"shares": [{"host_path": "/a", "cache": "fscache"}]})",
       R"(shares[0].cache: "fscache" is not a cache mode, expected "mmap", "loose" or "none")"},
      {R"({"shares": [{"host_path": "/a", "cache": true}]})",
       R"(shares[0].cache: true is a boolean, expected "mmap", "loose" or "none")"},
  });
}

TEST(ParseInstanceConfigTest, ShareCacheDefaultsToMmapAndRoundTrips) {
  StatusOr<InstanceConfig> c = ParseInstanceConfig(
      R"({"shares": [{"host_path": "/a"}, {"host_path": "/b", "cache": "loose"}]})",
      LinuxDefaults());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->shares[0].cache, "mmap");
  EXPECT_EQ(c->shares[1].cache, "loose");
  auto again = ParseInstanceConfig(SerializeInstanceConfig(*c), LinuxDefaults());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *c);
}

TEST(ParseInstanceConfigErrorTest, SharesMustNotCollide) {
  ExpectErrors({
      {R"({"shares": [{"host_path": "/a", "tag": "t"}, {"host_path": "/b", "tag": "t"}]})",
       R"(shares[1].tag: "t" is already used by shares[0], expected a different tag for each )"
       R"(share)"},
      {R"({"shares": [{"host_path": "/a", "guest_path": "/mnt"},
                      {"host_path": "/b", "guest_path": "//mnt/"}]})",
       R"(shares[1].guest_path: "//mnt/" is already used by shares[0], expected a different )"
       R"(guest path for each share)"},
      // The guest path defaults to the host path, so sharing one folder twice collides.
      {R"({"shares": [{"host_path": "/a"}, {"host_path": "/a", "read_only": true}]})",
       R"(shares[1].guest_path: "/a" is already used by shares[0], expected a different guest )"
       R"(path for each share)"},
  });
}

TEST(ParseInstanceConfigErrorTest, PortsShape) {
  ExpectErrors({
      {R"({"ports": "8080:80"})",
       R"(ports: "8080:80" is a string, expected an array of objects such as {"host_port": 8080, )"
       R"("guest_port": 80})"},
      {R"({"ports": [8080]})",
       R"(ports[0]: 8080 is an integer, expected an object such as {"host_port": 8080, )"
       R"("guest_port": 80, "protocol": "tcp"})"},
      {R"({"ports": [{"hostport": 8080, "guest_port": 80}]})",
       R"(unknown key "hostport" in ports[0] (did you mean "host_port"?))"},
  });
}

TEST(ParseInstanceConfigErrorTest, PortHostIp) {
  ExpectErrors({
      {R"({"ports": [{"host_ip": "localhost", "host_port": 1, "guest_port": 1}]})",
       R"(ports[0].host_ip: "localhost" is not an IP address, )" + kIpRule},
      {R"({"ports": [{"host_ip": "127.0.0.1\u0000x", "host_port": 1, "guest_port": 1}]})",
       R"(ports[0].host_ip: "127.0.0.1\u0000x" is not an IP address, )" + kIpRule},
      {R"({"ports": [{"host_ip": "fe80::1%eth0", "host_port": 1, "guest_port": 1}]})",
       R"(ports[0].host_ip: "fe80::1%eth0" is not an IP address, )" + kIpRule},
      {R"({"ports": [{"host_ip": 127, "host_port": 1, "guest_port": 1}]})",
       "ports[0].host_ip: 127 is an integer, " + kIpRule},
  });
}

TEST(ParseInstanceConfigErrorTest, PortHostPort) {
  ExpectErrors({
      {R"({"ports": [{"host_port": 8080, "guest_port": 80},
                     {"host_port": 70000, "guest_port": 80}]})",
       "ports[1].host_port: 70000 is out of range, " + kPortRule},
      {R"({"ports": [{"host_port": 0, "guest_port": 80}]})",
       "ports[0].host_port: 0 is out of range, " + kPortRule},
      {R"({"ports": [{"host_port": "8080", "guest_port": 80}]})",
       R"(ports[0].host_port: "8080" is a string, )" + kPortRule},
      {R"({"ports": [{"guest_port": 80}]})", "ports[0].host_port: missing, " + kPortRule},
  });
}

TEST(ParseInstanceConfigErrorTest, PortGuestPort) {
  ExpectErrors({
      {R"({"ports": [{"host_port": 8080, "guest_port": 65536}]})",
       "ports[0].guest_port: 65536 is out of range, " + kPortRule},
      {R"({"ports": [{"host_port": 8080, "guest_port": 80.5}]})",
       "ports[0].guest_port: 80.5 is a floating-point number, " + kPortRule},
      {R"({"ports": [{"host_port": 8080}]})", "ports[0].guest_port: missing, " + kPortRule},
  });
}

TEST(ParseInstanceConfigErrorTest, PortProtocol) {
  ExpectErrors({
      {R"({"ports": [{"host_port": 1, "guest_port": 1, "protocol": "tpc"}]})",
       R"(ports[0].protocol: "tpc" is not a known protocol, expected one of "tcp", "udp" )"
       R"((did you mean "tcp"?))"},
      {R"({"ports": [{"host_port": 1, "guest_port": 1, "protocol": "sctp"}]})",
       R"(ports[0].protocol: "sctp" is not a known protocol, expected one of "tcp", "udp")"},
      {R"({"ports": [{"host_port": 1, "guest_port": 1, "protocol": "icmp"}]})",
       R"(ports[0].protocol: "icmp" is not a known protocol, expected one of "tcp", "udp")"},
      {R"({"ports": [{"host_port": 1, "guest_port": 1, "protocol": 6}]})",
       R"(ports[0].protocol: 6 is an integer, expected one of "tcp", "udp")"},
  });
}

TEST(ParseInstanceConfigErrorTest, PortsMustNotCollide) {
  const std::string rule = "expected each host address, port and protocol at most once";
  ExpectErrors({
      {R"({"ports": [{"host_port": 8080, "guest_port": 80},
                     {"host_port": 8080, "guest_port": 81}]})",
       "ports[1].host_port: 8080 on 127.0.0.1/tcp conflicts with ports[0] "
       "(127.0.0.1:8080:80/tcp), " +
           rule},
      // The same address spelled differently.
      {R"({"ports": [
            {"host_ip": "::1", "host_port": 53, "guest_port": 53, "protocol": "udp"},
            {"host_ip": "0:0::1", "host_port": 53, "guest_port": 54, "protocol": "udp"}]})",
       "ports[1].host_port: 53 on 0:0::1/udp conflicts with ports[0] ([::1]:53:53/udp), " + rule},
      // A wildcard address overlaps every address of its family.
      {R"({"ports": [{"host_ip": "0.0.0.0", "host_port": 80, "guest_port": 80},
                     {"host_ip": "127.0.0.1", "host_port": 80, "guest_port": 8080}]})",
       "ports[1].host_port: 80 on 127.0.0.1/tcp conflicts with ports[0] (0.0.0.0:80:80/tcp), " +
           rule + " (0.0.0.0 and :: stand for every address)"},
  });
}

// --- Parsing: keys, types, syntax -----------------------------------------------------------

TEST(ParseInstanceConfigErrorTest, UnknownKeySuggestsTheClosestKnownKey) {
  ExpectErrors({
      {R"({"cpu": 4})", R"(unknown key "cpu" at top level (did you mean "cpus"?))"},
      {R"({"CPUS": 4})", R"(unknown key "CPUS" at top level (did you mean "cpus"?))"},
      {R"({"memroy_mib": 4096})",
       R"(unknown key "memroy_mib" at top level (did you mean "memory_mib"?))"},
      {R"({"share": []})", R"(unknown key "share" at top level (did you mean "shares"?))"},
      {R"({"colour": "blue"})",
       R"(unknown key "colour" at top level, expected one of "name", "backend", "accel", "cpus", )"
       R"("memory_mib", "disk_gib", "shares", "ports", "auto_forward", "tcg_threads", )"
       R"("share_transport", "agent_transport")"},
  });
}

TEST(ParseInstanceConfigErrorTest, FirstErrorInDocumentedOrder) {
  // Unknown keys come before any field; fields in schema order, not document order.
  EXPECT_EQ(ErrorFor(R"({"cpus": 0, "x": 1})"),
            R"(unknown key "x" at top level, expected one of "name", "backend", "accel", "cpus", )"
            R"("memory_mib", "disk_gib", "shares", "ports", "auto_forward", "tcg_threads", )"
            R"("share_transport", "agent_transport")");
  EXPECT_EQ(ErrorFor(R"({"disk_gib": 0, "cpus": 0})"),
            "cpus: 0 is out of range, expected an integer from 1 to 64");
  // Cross-field rules come after every field.
  EXPECT_EQ(ErrorFor(R"({"backend": "hyperkit", "accel": "tcg", "disk_gib": 0})"),
            "disk_gib: 0 is out of range, expected an integer from 1 to 2048");
}

TEST(ParseInstanceConfigErrorTest, DuplicateKeys) {
  ExpectErrors({
      {R"({"cpus": 2, "cpus": 4})", R"(duplicate key "cpus" at top level, expected each key once)"},
      {R"({"ports": [{"host_port": 1, "guest_port": 1},
                     {"host_port": 2, "guest_port": 2, "host_port": 3}]})",
       R"(duplicate key "host_port" in ports[1], expected each key once)"},
  });
}

TEST(ParseInstanceConfigErrorTest, TopLevelMustBeAnObject) {
  ExpectErrors({
      {"[1, 2]", R"(top level: [1,2] is an array, expected an object such as {"cpus": 4})"},
      {R"("cpus")", R"(top level: "cpus" is a string, expected an object such as {"cpus": 4})"},
      {"null", R"(top level: got null, expected an object such as {"cpus": 4})"},
      {"4", R"(top level: 4 is an integer, expected an object such as {"cpus": 4})"},
  });
}

TEST(ParseInstanceConfigErrorTest, MalformedJsonMissingComma) {
  // Line 3 is `  "memory_mib": 4096`; the parser stops at the end of the unexpected key.
  EXPECT_EQ(ErrorFor("{\n  \"cpus\": 4\n  \"memory_mib\": 4096\n}\n"),
            "config.json:3:14: malformed JSON: syntax error while parsing object - unexpected "
            "string literal; expected '}'");
}

TEST(ParseInstanceConfigErrorTest, MalformedJsonTrailingGarbage) {
  EXPECT_THAT(ErrorFor("{\"cpus\": 4}\n}\n"), StartsWith("config.json:2:1: malformed JSON: "));
  EXPECT_THAT(ErrorFor("{}\n x"), StartsWith("config.json:2:2: malformed JSON: "));
}

TEST(ParseInstanceConfigErrorTest, MalformedJsonTruncated) {
  EXPECT_EQ(ErrorFor("{\n  \"cpus\": 4,\n"),
            "config.json:3:1: malformed JSON: syntax error while parsing object key - unexpected "
            "end of input; expected string literal");
  EXPECT_THAT(ErrorFor("{\"cpus\": 4"), StartsWith("config.json:1:11: malformed JSON: "));
  EXPECT_THAT(ErrorFor(""), StartsWith("config.json:1:1: malformed JSON: "));
}

TEST(ParseInstanceConfigErrorTest, MalformedJsonUsesTheSourceName) {
  EXPECT_THAT(ErrorFor("{,}", "/tmp/x/config.json"),
              StartsWith("/tmp/x/config.json:1:2: malformed JSON: "));
}

TEST(ParseInstanceConfigErrorTest, MalformedJsonColumnsCountCharacters) {
  // "é" is two bytes but one column; the parser stops at the end of "x" (column 20).
  EXPECT_THAT(ErrorFor("{\"name\": \"h\xC3\xA9llo\" \"x\"}"),
              StartsWith("config.json:1:20: malformed JSON: "));
}

TEST(ParseInstanceConfigErrorTest, MalformedJsonStringWithNewline) {
  // The raw newline ends the string on line 1, where the mistake is.
  EXPECT_THAT(ErrorFor("{\"a\": \"x\ny\"}"), StartsWith("config.json:1:9: malformed JSON: "));
}

TEST(ParseInstanceConfigErrorTest, MalformedJsonInvalidUtf8IsNotEchoed) {
  const std::string error = ErrorFor("{\"name\": \"\xFF\"}");
  EXPECT_THAT(error, StartsWith("config.json:1:11: malformed JSON: "));
  EXPECT_THAT(error, Not(HasSubstr("\xFF")));
  EXPECT_THAT(error, HasSubstr("\\xFF"));
}

TEST(ParseInstanceConfigErrorTest, NumberOverflow) {
  EXPECT_THAT(ErrorFor(R"({"cpus": 1e999})"),
              StartsWith("config.json: malformed JSON: number overflow"));
}

TEST(ParseInstanceConfigErrorTest, CommentsAreNotJson) {
  EXPECT_THAT(ErrorFor("{\n  // four\n  \"cpus\": 4\n}"),
              StartsWith("config.json:2:3: malformed JSON: "));
}

TEST(ParseInstanceConfigErrorTest, LongValuesAreCut) {
  const std::string error = ErrorFor(R"({"name": ")" + std::string(1000, 'a') + R"("})");
  EXPECT_THAT(error, StartsWith(R"(name: "aaaa)"));
  EXPECT_THAT(error, HasSubstr(R"(aaa... is not a valid instance name)"));
  EXPECT_LT(error.size(), 250u);
}

TEST(ParseInstanceConfigErrorTest, DeepNestingIsHandled) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  const std::string error = ErrorFor(R"({"cpus": )" + deep + "}");
  EXPECT_THAT(error, StartsWith("cpus: [[[["));
  EXPECT_THAT(error, HasSubstr("... is an array, expected an integer from 1 to 64"));
  EXPECT_THAT(ErrorFor(deep), StartsWith("top level: [[[["));
}

TEST(ParseInstanceConfigErrorTest, OddKeysAreQuotedInPaths) {
  EXPECT_EQ(ErrorFor(R"({"a b": {"x": 1, "x": 2}})"),
            R"(duplicate key "x" in ["a b"], expected each key once)");
}

// --- NormalizeInstanceConfig ----------------------------------------------------------------

TEST(NormalizeInstanceConfigTest, FillsGuestPathAndTag) {
  InstanceConfig c;
  c.shares = {Share{.host_path = "/", .guest_path = "/host"},
              Share{.host_path = "/srv/Project Files"},
              Share{.host_path = "/a/very/long/path/with/many/components/inside/it"}};
  StatusOr<InstanceConfig> n = NormalizeInstanceConfig(c);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->shares[0].tag, "root");
  EXPECT_EQ(n->shares[0].guest_path, "/host");  // A host root needs a guest path of its own.
  EXPECT_EQ(n->shares[1].tag, "srv-project-files");
  EXPECT_EQ(n->shares[1].guest_path, "/srv/Project Files");
  // Long paths keep their most specific end.
  EXPECT_EQ(n->shares[2].tag, "with-many-components-inside-it");
  EXPECT_LE(n->shares[2].tag.size(), kMaxShareTagLength);
}

TEST(NormalizeInstanceConfigTest, IsIdempotent) {
  InstanceConfig c = FullConfig();
  c.shares.push_back(Share{.host_path = "/data", .guest_path = "/mnt/data"});
  StatusOr<InstanceConfig> once = NormalizeInstanceConfig(c);
  ASSERT_TRUE(once.ok()) << once.status();
  StatusOr<InstanceConfig> twice = NormalizeInstanceConfig(*once);
  ASSERT_TRUE(twice.ok()) << twice.status();
  EXPECT_EQ(*once, *twice);
  EXPECT_EQ(once->shares.back().tag, "data-2");
}

TEST(NormalizeInstanceConfigTest, ReportsFieldsLikeTheParser) {
  InstanceConfig c;
  c.cpus = 0;
  EXPECT_EQ(NormalizeInstanceConfig(c).status().message(),
            "cpus: 0 is out of range, expected an integer from 1 to 64");
  c = InstanceConfig();
  c.ports = {PortForward{.host_port = 8080}};
  EXPECT_EQ(NormalizeInstanceConfig(c).status().message(),
            "ports[0].guest_port: 0 is out of range, expected an integer from 1 to 65535");
  c = InstanceConfig();
  c.backend = static_cast<Backend>(42);
  EXPECT_EQ(NormalizeInstanceConfig(c).status().message(),
            R"(backend: 42 is not a known backend, expected one of "qemu", "hyperkit", "native")");
}

// --- Serialization --------------------------------------------------------------------------

TEST(SerializeInstanceConfigTest, PrettyJsonInDeclarationOrder) {
  InstanceConfig c;
  c.shares = {Share{.host_path = "/src", .guest_path = "/src", .tag = "src"}};
  c.ports = {PortForward{.host_port = 8080, .guest_port = 80}};
  EXPECT_EQ(SerializeInstanceConfig(c), R"({
  "name": "default",
  "backend": "qemu",
  "accel": "auto",
  "cpus": 2,
  "memory_mib": 2048,
  "disk_gib": 20,
  "shares": [
    {
      "host_path": "/src",
      "guest_path": "/src",
      "read_only": false,
      "tag": "src"
    }
  ],
  "ports": [
    {
      "host_ip": "127.0.0.1",
      "host_port": 8080,
      "guest_port": 80,
      "protocol": "tcp"
    }
  ],
  "auto_forward": "all",
  "tcg_threads": "multi",
  "share_transport": "serial",
  "agent_transport": "tcp"
}
)");
}

TEST(InstanceConfigTest, TcgThreadsIsMultiByDefaultOrSingle) {
  EXPECT_EQ(InstanceConfig().tcg_threads, "multi");
  auto parsed = ParseInstanceConfig(R"({"tcg_threads": "single"})", InstanceConfig());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->tcg_threads, "single");
  EXPECT_EQ(ErrorFor(R"({"tcg_threads": "many"})"),
            R"(tcg_threads: "many" is not a TCG threading mode, expected "single" or "multi")");
  EXPECT_EQ(ErrorFor(R"({"tcg_threads": 2})"),
            R"(tcg_threads: 2 is an integer, expected "single" or "multi")");
}

TEST(InstanceConfigTest, ShareTransportIsSerialByDefaultOrVsock) {
  EXPECT_EQ(InstanceConfig().share_transport, "serial");
  auto parsed = ParseInstanceConfig(R"({"share_transport": "vsock"})", InstanceConfig());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->share_transport, "vsock");
  EXPECT_EQ(ErrorFor(R"({"share_transport": "virtio"})"),
            R"(share_transport: "virtio" is not a share transport, expected "serial" or "vsock")");
  EXPECT_EQ(ErrorFor(R"({"share_transport": true})"),
            R"(share_transport: true is a boolean, expected "serial" or "vsock")");
}

TEST(InstanceConfigTest, AgentTransportIsTcpByDefaultOrVsock) {
  EXPECT_EQ(InstanceConfig().agent_transport, "tcp");
  EXPECT_EQ(DefaultInstanceConfig({.is_macos = false}).agent_transport, "vsock");
  EXPECT_EQ(DefaultInstanceConfig({.is_macos = true, .is_arm64 = true}).agent_transport, "tcp");
  auto parsed = ParseInstanceConfig(R"({"agent_transport": "vsock"})", InstanceConfig());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->agent_transport, "vsock");
  EXPECT_EQ(ErrorFor(R"({"agent_transport": "serial"})"),
            R"(agent_transport: "serial" is not an agent transport, expected "tcp" or "vsock")");
  EXPECT_EQ(ErrorFor(R"({"agent_transport": 1})"),
            R"(agent_transport: 1 is an integer, expected "tcp" or "vsock")");
}

TEST(InstanceConfigTest, AutoForwardTakesAllOffOrPortRanges) {
  using Ranges = std::vector<std::pair<uint16_t, uint16_t>>;
  EXPECT_EQ(*ParsePortRanges("all"), (Ranges{{1, 65535}}));
  EXPECT_EQ(*ParsePortRanges("off"), Ranges{});
  EXPECT_EQ(*ParsePortRanges("3000,8000-8999"), (Ranges{{3000, 3000}, {8000, 8999}}));
  for (const char* bad : {"", "0", "70000", "9-8", "1,,2", "8000-", "-1", "a-b", "1 - 2"}) {
    EXPECT_FALSE(ParsePortRanges(bad).ok()) << bad;
  }
  auto parsed = ParseInstanceConfig(R"({"auto_forward": "8000-8999"})", InstanceConfig());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->auto_forward, "8000-8999");
  auto bad = ParseInstanceConfig(R"({"auto_forward": "9-8"})", InstanceConfig());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("auto_forward"), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("descending range"), std::string::npos) << bad.status();
}

TEST(SerializeInstanceConfigTest, UnnormalizedSharesParseToTheNormalizedConfig) {
  InstanceConfig c;
  c.shares = {Share{.host_path = "/src"}};
  EXPECT_THAT(SerializeInstanceConfig(c), Not(HasSubstr("tag")));
  StatusOr<InstanceConfig> parsed =
      ParseInstanceConfig(SerializeInstanceConfig(c), LinuxDefaults());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, *NormalizeInstanceConfig(c));
}

TEST(SerializeInstanceConfigTest, ToJson) {
  nlohmann::json j = ToJson(FullConfig());
  EXPECT_EQ(j["name"], "work-vm_2");
  EXPECT_EQ(j["backend"], "qemu");
  EXPECT_EQ(j["accel"], "tcg");
  EXPECT_EQ(j["cpus"], 8);
  EXPECT_EQ(j["memory_mib"], 8192);
  EXPECT_EQ(j["disk_gib"], 100);
  EXPECT_EQ(j["shares"][1]["guest_path"], "/data");
  EXPECT_EQ(j["shares"][1]["read_only"], true);
  EXPECT_EQ(j["ports"][1]["host_ip"], "::1");
  EXPECT_EQ(j["ports"][1]["protocol"], "udp");
  StatusOr<InstanceConfig> parsed = ParseInstanceConfig(j.dump(), LinuxDefaults());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, FullConfig());
}

// --- Files ----------------------------------------------------------------------------------

class InstanceConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "instance_config_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/config.json";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void WriteFile(const std::string& text) { std::ofstream(path_, std::ios::binary) << text; }

  std::vector<std::string> DirEntries() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir_)) {
      names.push_back(e.path().filename().string());
    }
    return names;
  }

  std::string dir_;
  std::string path_;
};

TEST_F(InstanceConfigFileTest, SaveThenLoadRoundTrips) {
  ASSERT_TRUE(SaveInstanceConfigFile(path_, FullConfig()).ok());
  StatusOr<InstanceConfig> loaded = LoadInstanceConfigFile(path_, LinuxDefaults());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(*loaded, FullConfig());
  EXPECT_EQ(DirEntries(), std::vector<std::string>{"config.json"});  // No temporary left.
}

TEST_F(InstanceConfigFileTest, SavedFileHasMode0600) {
  WriteFile("{}");
  ASSERT_EQ(::chmod(path_.c_str(), 0644), 0);
  ASSERT_TRUE(SaveInstanceConfigFile(path_, LinuxDefaults()).ok());
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(InstanceConfigFileTest, SaveReplacesTheOldContents) {
  InstanceConfig c = LinuxDefaults();
  ASSERT_TRUE(SaveInstanceConfigFile(path_, c).ok());
  c.cpus = 7;
  ASSERT_TRUE(SaveInstanceConfigFile(path_, c).ok());
  StatusOr<InstanceConfig> loaded = LoadInstanceConfigFile(path_, LinuxDefaults());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->cpus, 7);
}

TEST_F(InstanceConfigFileTest, SaveRefusesAnInvalidConfig) {
  InstanceConfig c = LinuxDefaults();
  c.memory_mib = 1;
  Status s = SaveInstanceConfigFile(path_, c);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_EQ(s.message(), "not saving " + path_ +
                             ": memory_mib: 1 is out of range, expected an integer from 256 to "
                             "131072");
  EXPECT_TRUE(DirEntries().empty());
}

TEST_F(InstanceConfigFileTest, SaveIntoAMissingDirectoryFails) {
  Status s = SaveInstanceConfigFile(dir_ + "/nope/config.json", LinuxDefaults());
  EXPECT_EQ(s.code(), Code::kNotFound) << s;
  EXPECT_THAT(s.message(), StartsWith("saving " + dir_ + "/nope/config.json: "));
}

TEST_F(InstanceConfigFileTest, MissingFileIsNotFound) {
  StatusOr<InstanceConfig> loaded = LoadInstanceConfigFile(path_, LinuxDefaults());
  EXPECT_EQ(loaded.status().code(), Code::kNotFound);
  EXPECT_EQ(loaded.status().message(), path_ + ": No such file or directory");
}

TEST_F(InstanceConfigFileTest, ErrorsStartWithThePath) {
  WriteFile(R"({"cpus": 100})");
  EXPECT_EQ(LoadInstanceConfigFile(path_, LinuxDefaults()).status().message(),
            path_ + ": cpus: 100 is out of range, expected an integer from 1 to 64");
  WriteFile("{\n  \"cpus\": 4,\n}\n");
  EXPECT_THAT(LoadInstanceConfigFile(path_, LinuxDefaults()).status().message(),
              StartsWith(path_ + ":3:1: malformed JSON: "));
  WriteFile("[]");
  EXPECT_THAT(LoadInstanceConfigFile(path_, LinuxDefaults()).status().message(),
              StartsWith(path_ + ": top level: [] is an array"));
}

TEST_F(InstanceConfigFileTest, DirectoryIsNotAConfigFile) {
  StatusOr<InstanceConfig> loaded = LoadInstanceConfigFile(dir_, LinuxDefaults());
  EXPECT_EQ(loaded.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(loaded.status().message(), dir_ + ": not a regular file");
}

TEST_F(InstanceConfigFileTest, HugeFileIsRefused) {
  WriteFile("{\"name\": \"" + std::string(2 << 20, 'a') + "\"}");
  StatusOr<InstanceConfig> loaded = LoadInstanceConfigFile(path_, LinuxDefaults());
  EXPECT_EQ(loaded.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(loaded.status().message(), HasSubstr("too large for a config file"));
}

// --- ParsePortSpec --------------------------------------------------------------------------

TEST(ParsePortSpecTest, GoodSpecs) {
  struct Case {
    std::string spec;
    PortForward want;
  };
  const std::vector<Case> cases = {
      {"8080:80", {.host_ip = "127.0.0.1", .host_port = 8080, .guest_port = 80}},
      {"8080:80/tcp", {.host_ip = "127.0.0.1", .host_port = 8080, .guest_port = 80}},
      {"53:53/udp",
       {.host_ip = "127.0.0.1", .host_port = 53, .guest_port = 53, .protocol = Protocol::kUdp}},
      {"0.0.0.0:8080:80", {.host_ip = "0.0.0.0", .host_port = 8080, .guest_port = 80}},
      {"192.168.1.5:1:65535/udp",
       {.host_ip = "192.168.1.5", .host_port = 1, .guest_port = 65535, .protocol = Protocol::kUdp}},
      {"[::1]:8080:80", {.host_ip = "::1", .host_port = 8080, .guest_port = 80}},
      {"[::]:443:8443/tcp", {.host_ip = "::", .host_port = 443, .guest_port = 8443}},
      {"[fe80::1:2]:5353:53/udp",
       {.host_ip = "fe80::1:2", .host_port = 5353, .guest_port = 53, .protocol = Protocol::kUdp}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.spec);
    StatusOr<PortForward> got = ParsePortSpec(c.spec);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, c.want);
    StatusOr<PortForward> again = ParsePortSpec(FormatPortSpec(*got));
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(*again, *got);
  }
}

TEST(ParsePortSpecTest, BadSpecs) {
  struct Case {
    std::string spec;
    std::string problem;
  };
  const std::vector<Case> cases = {
      {"", "it is empty"},
      {"80", "it needs both a host port and a guest port"},
      {"70000:80", R"(host port "70000" is not an integer from 1 to 65535)"},
      {"8080:0", R"(guest port "0" is not an integer from 1 to 65535)"},
      {"8080:", R"(guest port "" is not an integer from 1 to 65535)"},
      {":80", R"(host port "" is not an integer from 1 to 65535)"},
      {"+80:80", R"(host port "+80" is not an integer from 1 to 65535)"},
      {"8080-8090:80", R"(host port "8080-8090" is not an integer from 1 to 65535)"},
      {"8080:80/sctp", R"("sctp" is not a protocol (tcp or udp))"},
      {"8080:80/", R"("" is not a protocol (tcp or udp))"},
      {"localhost:8080:80", R"("localhost" is not an IP address)"},
      {":8080:80", R"(the host address before the first ":" is empty)"},
      {"::1:8080:80", "an IPv6 host address goes in brackets, such as [::1]:8080:80"},
      {"[::1:8080:80", R"(no "]" after the IPv6 address)"},
      {"[::1]8080:80", R"(expected ":" and the host port after "]")"},
      {"[::1]:8080", "expected HOST_PORT:GUEST_PORT after the address"},
      {"[127.0.0.1]:8080:80", R"("127.0.0.1" in brackets is not an IPv6 address)"},
      {"1.2.3.4:8080:80:90", "an IPv6 host address goes in brackets, such as [::1]:8080:80"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.spec);
    StatusOr<PortForward> got = ParsePortSpec(c.spec);
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.status().code(), Code::kInvalidArgument);
    EXPECT_EQ(got.status().message(),
              "invalid port spec " + nlohmann::json(c.spec).dump() + ": " + c.problem +
                  "; expected [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|/udp], such as 8080:80, "
                  "127.0.0.1:8080:80/udp or [::1]:8080:80");
  }
}

TEST(ParsePortSpecTest, FormatPortSpec) {
  EXPECT_EQ(FormatPortSpec({.host_ip = "127.0.0.1", .host_port = 8080, .guest_port = 80}),
            "127.0.0.1:8080:80/tcp");
  EXPECT_EQ(FormatPortSpec(
                {.host_ip = "::1", .host_port = 53, .guest_port = 53, .protocol = Protocol::kUdp}),
            "[::1]:53:53/udp");
}

}  // namespace
}  // namespace fun

namespace fun {
namespace {

// Found by fuzz/instance_config_fuzzer: sharing "/" without a guest_path derived the guest path
// "/", which the parser refuses when it is written out, so the config could not be reloaded.
TEST(ParseInstanceConfigErrorTest, SharingRootNeedsAnExplicitGuestPath) {
  auto defaults = DefaultInstanceConfig({.is_macos = false, .is_arm64 = false, .home_dir = ""});
  auto r = ParseInstanceConfig(R"({"shares":[{"host_path":"/"}]})", defaults);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("shares[0].host_path is used as the guest path"),
            std::string::npos)
      << r.status().message();
  auto ok = ParseInstanceConfig(R"({"shares":[{"host_path":"/","guest_path":"/host"}]})", defaults);
  EXPECT_TRUE(ok.ok()) << ok.status();
}

}  // namespace
}  // namespace fun

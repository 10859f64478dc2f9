// bundle_test.cc: the support bundle's archive format (checked with the real tar(1)), its
// redaction, and `fun-doctor bundle` on a fake instance and on a real directory.
#include "tools/doctor/bundle.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "lib/base/process.h"
#include "tools/doctor/doctor.h"
#include "tools/doctor/fake_doctor_env.h"

namespace fun::doctor {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/fun-bundle-test-XXXXXX";
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::system(("rm -rf " + path_).c_str()); }  // NOLINT
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ProcessResult RunTool(std::vector<std::string> argv) {
  Command c{.program = argv[0], .args = {argv.begin() + 1, argv.end()}};
  auto r = ProcessRunner::Default().Run(c);
  return r.ok() ? *r : ProcessResult::Exited(127, "", std::string(r.status().message()));
}

TEST(TarArchiveTest, TheRealTarListsAndExtractsWhatWasWritten) {
  TempDir dir;
  std::string big(70000, 'x');
  big[12345] = '\n';
  auto tar =
      TarArchive({{"README.txt", "hello\n"}, {"logs/hostd.log", big}, {"empty", ""}}, 1767225600);
  ASSERT_TRUE(tar.ok()) << tar.status();
  EXPECT_EQ(tar->size() % 512, 0u);
  std::ofstream(dir.path() + "/b.tar", std::ios::binary) << *tar;
  ProcessResult list = RunTool({"tar", "-tvf", dir.path() + "/b.tar"});
  ASSERT_EQ(list.exit_code, 0) << list.stderr_data;
  EXPECT_THAT(list.stdout_data, HasSubstr("README.txt"));
  EXPECT_THAT(list.stdout_data, HasSubstr("2026-01-01"));
  ASSERT_EQ(RunTool({"tar", "-xf", dir.path() + "/b.tar", "-C", dir.path()}).exit_code, 0);
  EXPECT_EQ(ReadAll(dir.path() + "/README.txt"), "hello\n");
  EXPECT_EQ(ReadAll(dir.path() + "/logs/hostd.log"), big);
  EXPECT_EQ(ReadAll(dir.path() + "/empty"), "");
}

TEST(TarArchiveTest, UnsafeNamesAreRefused) {
  for (const std::string& bad : std::vector<std::string>{"", "/etc/passwd", "../x", "a/../b",
                                                         "a//b", std::string(101, 'n')}) {
    auto tar = TarArchive({{bad, "x"}}, 0);
    EXPECT_FALSE(tar.ok()) << bad;
  }
}

TEST(RedactTest, SecretKeysAtAnyDepthAndTheSecretsBytesInText) {
  EXPECT_TRUE(IsSecretKey("secret"));
  EXPECT_TRUE(IsSecretKey("registry_Token"));
  EXPECT_TRUE(IsSecretKey("PASSWORD"));
  EXPECT_TRUE(IsSecretKey("ssh_key"));
  EXPECT_FALSE(IsSecretKey("auto_forward"));
  EXPECT_FALSE(IsSecretKey("memory_mib"));
  nlohmann::json j = nlohmann::json::parse(
      R"({"name":"default","auth":{"user":"u"},"registries":[{"host":"r","password":"p"}]})");
  nlohmann::json r = RedactJson(j);
  EXPECT_EQ(r["name"], "default");
  EXPECT_EQ(r["auth"], "<redacted>");
  EXPECT_EQ(r["registries"][0]["host"], "r");
  EXPECT_EQ(r["registries"][0]["password"], "<redacted>");
  std::string secret =
      "\x01\x02\xfe\xff"
      "abcdefgh";
  EXPECT_EQ(RedactText("a " + secret + " b 0102feff6162636465666768 c", {secret}),
            "a <redacted> b <redacted> c");
  // Short "secrets" would match anywhere: ignored.
  EXPECT_EQ(RedactText("abc", {"abc"}), "abc");
}

class BundleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    input_ = {.os = Os::kLinux, .home = "/home/u", .fun_home = "", .xdg_state_home = ""};
    paths_ = ResolvePaths(input_).value();
    env_.MakeHealthy(paths_, "default");
    dir_ = paths_.InstanceDir("default");
    secret_ = std::string("\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff\x00", 16) +
              std::string(16, 'Q');
    env_.AddFile(dir_ + "/secret", secret_, 0600);
  }
  int Call(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    return ::fun::doctor::Run(args, input_, env_, out_, err_);
  }

  PathsInput input_;
  Paths paths_;
  FakeDoctorEnv env_;
  std::string dir_, secret_;
  std::ostringstream out_, err_;
};

TEST_F(BundleTest, WritesEveryPartAndPrintsThePath) {
  ASSERT_EQ(Call({"bundle", "--json"}), 0) << err_.str();
  nlohmann::json j = nlohmann::json::parse(out_.str());
  std::string path = j["path"];
  EXPECT_THAT(path, StartsWith(paths_.state_dir + "/fun-bundle-default-"));
  EXPECT_THAT(path, testing::EndsWith(".tar"));
  EXPECT_THAT(j["files"],
              ElementsAre("README.txt", "versions.txt", "doctor.json", "status.json", "config.json",
                          "logs/console.log", "logs/hostd.log", "NOT_COLLECTED.txt"));
  // ports.json and state.json do not exist in this fake instance: said, not faked.
  EXPECT_THAT(j["notes"].dump(), HasSubstr("ports.json"));
  auto st = env_.Stat(path);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->mode, 0600u);
  ASSERT_EQ(Call({"bundle"}), 0);
  EXPECT_THAT(out_.str(), StartsWith("fun-doctor: wrote " + paths_.state_dir + "/fun-bundle-"));
}

TEST_F(BundleTest, TheSecretNeverLeavesTheMachine) {
  env_.AddFile(paths_.InstanceFile("default", InstanceFileKind::kConfig),
               R"({"name":"default","registry_token":"hunter2-hunter2"})", 0600);
  std::string hex;
  for (unsigned char c : secret_) hex += fmt::format("{:02x}", c);
  env_.AddFile(paths_.InstanceFile("default", InstanceFileKind::kHostdLog),
               "I started\nW someone logged the secret " + hex + " and raw " + secret_ + "\n",
               0600);
  ASSERT_EQ(Call({"bundle", "--out", "/home/u/b.tar"}), 1 - 1) << err_.str();
  std::string tar = env_.Contents("/home/u/b.tar");
  ASSERT_FALSE(tar.empty());
  EXPECT_EQ(tar.find(secret_), std::string::npos);
  EXPECT_EQ(tar.find(hex), std::string::npos);
  EXPECT_EQ(tar.find("hunter2"), std::string::npos);
  EXPECT_NE(tar.find("someone logged the secret <redacted> and raw <redacted>"), std::string::npos);
  EXPECT_NE(tar.find("\"registry_token\": \"<redacted>\""), std::string::npos);
}

TEST_F(BundleTest, BadUseExits2) {
  EXPECT_EQ(Call({"--out", "/tmp"}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("--out is for `fun-doctor bundle`"));
  EXPECT_EQ(Call({"bundle", "--fix"}), 2);
  EXPECT_EQ(Call({"bundle", "--out", "/no/such/dir"}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("not a directory and not a path ending in .tar"));
  env_.write_error = PermissionDeniedError("creating /home/u/b.tar: Permission denied");
  EXPECT_EQ(Call({"bundle", "--out", "/home/u/b.tar"}), 2);
  EXPECT_THAT(err_.str(), StartsWith("fun-doctor: bundle: creating /home/u/b.tar"));
}

// On the real file system: an instance dir with a secret, logs and config; the archive is
// read back with tar(1).
TEST(RealBundleTest, ARealArchiveHoldsTheLogsAndNotTheSecret) {
  TempDir dir;
  PathsInput in{.os = CurrentOs(),
                .home = dir.path(),
                .fun_home = dir.path() + "/state",
                .xdg_state_home = ""};
  Paths paths = ResolvePaths(in).value();
  std::string inst = paths.InstanceDir("default");
  ASSERT_EQ(std::system(("mkdir -p " + inst).c_str()), 0);  // NOLINT
  std::string secret(32, '\0');
  for (size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<char>(0x80 + i);
  std::ofstream(inst + "/secret", std::ios::binary) << secret;
  std::ofstream(inst + "/config.json") << R"({"name":"default","cpus":2})";
  std::ofstream(inst + "/hostd.log") << "I hostd started\n";
  std::ofstream(inst + "/console.log") << "fun-init: containerd ready after 1.84 s\n";
  RealDoctorEnv env;
  std::ostringstream out, err;
  ASSERT_EQ(::fun::doctor::Run({"bundle", "--json", "--out", dir.path()}, in, env, out, err), 0)
      << err.str();
  std::string path = nlohmann::json::parse(out.str())["path"];
  ProcessResult list = RunTool({"tar", "-tf", path});
  ASSERT_EQ(list.exit_code, 0) << list.stderr_data;
  EXPECT_THAT(list.stdout_data, HasSubstr("logs/hostd.log\n"));
  EXPECT_THAT(list.stdout_data, HasSubstr("logs/console.log\n"));
  EXPECT_THAT(list.stdout_data, HasSubstr("doctor.json\n"));
  EXPECT_THAT(list.stdout_data, Not(HasSubstr("secret")));
  std::string bytes = ReadAll(path);
  EXPECT_EQ(bytes.find(secret), std::string::npos);
  struct stat sb {};
  ASSERT_EQ(::stat(path.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);
  ProcessResult doctor = RunTool({"tar", "-xOf", path, "doctor.json"});
  ASSERT_EQ(doctor.exit_code, 0);
  EXPECT_TRUE(nlohmann::json::parse(doctor.stdout_data).is_array());
}

}  // namespace
}  // namespace fun::doctor

// Interop: the real fun-9p binary, started as a user would, against diod's own 9P2000.L clients
// (diodcat, diodls, diodload from Debian's diod package). Label "interop".
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "lib/base/process.h"

namespace fun {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class Fun9pInteropTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/usr/sbin/diodcat", X_OK) != 0) {
      FAIL() << "diod's clients are missing: run ci/setup.sh";
    }
    std::string tmpl = "/tmp/fun-9p-interop-XXXXXX";
    dir_ = ::mkdtemp(tmpl.data());
    export_ = dir_ + "/export";
    ctl_ = dir_ + "/ctl";
    ASSERT_EQ(::mkdir(export_.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(ctl_.c_str(), 0755), 0);
    std::ofstream(ctl_ + "/null") << "";
    Command cmd{.program = FUN_9P_BINARY,
                .args = {"serve", "--export", "data=" + export_, "--export", "ctl=" + ctl_,
                         "--listen", "tcp:127.0.0.1:0", "--msize", "262144"},
                .capture_output = false};
    cmd.stdout_file = dir_ + "/stdout";
    cmd.stderr_file = dir_ + "/stderr";
    auto p = ProcessRunner::Default().Start(cmd);
    ASSERT_TRUE(p.ok()) << p.status();
    server_ = std::move(*p);
    for (int i = 0; i < 500 && address_.empty(); ++i) {
      std::string out = ReadFile(dir_ + "/stdout");
      auto at = out.find("listening on tcp:");
      auto nl = out.find('\n', at);
      if (at != std::string::npos && nl != std::string::npos) {
        address_ = out.substr(at + 17, nl - at - 17);  // HOST:PORT
      } else {
        ASSERT_TRUE(server_->Running()) << ReadFile(dir_ + "/stderr");
        std::this_thread::sleep_for(20ms);
      }
    }
    ASSERT_FALSE(address_.empty()) << "fun-9p never printed its address";
  }

  void TearDown() override {
    if (server_) {
      EXPECT_TRUE(server_->Terminate(5s).ok());
      auto r = server_->Wait(std::nullopt);
      ASSERT_TRUE(r.ok());
      // SIGTERM is a clean shutdown for fun-9p.
      EXPECT_EQ(r->exit_code, 0) << r->Describe() << "\n" << ReadFile(dir_ + "/stderr");
    }
    if (!dir_.empty()) std::system(("rm -rf '" + dir_ + "'").c_str());  // NOLINT
  }

  ProcessResult RunClient(const std::string& program, std::vector<std::string> args) {
    Command c{.program = program, .args = std::move(args)};
    c.timeout = 60s;
    auto r = ProcessRunner::Default().Run(c);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ProcessResult::Exited(-1);
  }

  std::string dir_, export_, ctl_, address_;
  std::unique_ptr<Process> server_;
};

TEST_F(Fun9pInteropTest, DiodcatReadsFilesByteIdentical) {
  std::mt19937_64 rng(42);
  std::string big(5 * 1024 * 1024 + 123, '\0');
  for (auto& c : big) c = static_cast<char>(rng());
  std::ofstream(export_ + "/big.bin", std::ios::binary) << big;
  std::ofstream(export_ + "/small.txt") << "hello, 9p\n";
  std::ofstream(export_ + "/empty") << "";
  for (const auto& [name, content] : std::vector<std::pair<std::string, std::string>>{
           {"big.bin", big}, {"small.txt", "hello, 9p\n"}, {"empty", ""}}) {
    auto r = RunClient("/usr/sbin/diodcat", {"-s", address_, "-a", "data", "-m", "262144", name});
    ASSERT_TRUE(r.ok()) << name << ": " << r.Describe() << " " << r.stderr_data;
    EXPECT_EQ(r.stdout_data.size(), content.size()) << name;
    EXPECT_TRUE(r.stdout_data == content) << name << " differs";
  }
}

TEST_F(Fun9pInteropTest, DiodcatByExportPathAndMissingFile) {
  std::ofstream(export_ + "/f") << "by path";
  auto r = RunClient("/usr/sbin/diodcat", {"-s", address_, "-a", export_, "f"});
  ASSERT_TRUE(r.ok()) << r.stderr_data;
  EXPECT_EQ(r.stdout_data, "by path");
  auto missing = RunClient("/usr/sbin/diodcat", {"-s", address_, "-a", "data", "nope"});
  EXPECT_FALSE(missing.ok());
  auto bad_export = RunClient("/usr/sbin/diodcat", {"-s", address_, "-a", "nosuch", "f"});
  EXPECT_FALSE(bad_export.ok());
}

TEST_F(Fun9pInteropTest, DiodlsListsADirectory) {
  std::set<std::string> want;
  ASSERT_EQ(::mkdir((export_ + "/d").c_str(), 0755), 0);
  for (int i = 0; i < 300; ++i) {
    std::string n = "entry-" + std::to_string(i);
    std::ofstream(export_ + "/d/" + n) << i;
    want.insert(n);
  }
  ASSERT_EQ(::mkdir((export_ + "/d/sub").c_str(), 0755), 0);
  want.insert("sub");
  auto r = RunClient("/usr/sbin/diodls", {"-s", address_, "-a", "data", "d"});
  ASSERT_TRUE(r.ok()) << r.stderr_data;
  std::set<std::string> got;
  std::istringstream lines(r.stdout_data);
  for (std::string line; std::getline(lines, line);) {
    if (line == "." || line == "..") continue;
    EXPECT_TRUE(got.insert(line).second) << "listed twice: " << line;
  }
  EXPECT_EQ(got, want);
}

TEST_F(Fun9pInteropTest, DiodloadGetattrRunsWithoutErrors) {
  auto r =
      RunClient("/usr/sbin/diodload", {"-s", address_, "-g", "-n", "4", "-r", "2", "-m", "65536"});
  EXPECT_TRUE(r.ok()) << r.Describe() << "\nstdout: " << r.stdout_data
                      << "\nstderr: " << r.stderr_data;
  EXPECT_THAT(r.stderr_data, ::testing::Not(HasSubstr("error")));
}

}  // namespace
}  // namespace fun

#include "tools/fun-vmctl/vmctl.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace fun::vmctl {
namespace {

using ::testing::HasSubstr;

class VmctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/fun-vmctl-test-XXXXXX";
    home_ = ::mkdtemp(tmpl.data());
    env_ = {.os = Os::kLinux, .home = home_, .fun_home = home_ + "/state", .xdg_state_home = ""};
  }
  void TearDown() override { std::system(("rm -rf '" + home_ + "'").c_str()); }  // NOLINT

  int Call(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    return ::fun::vmctl::Run(args, env_, out_, err_);
  }

  std::string home_;
  PathsInput env_;
  std::ostringstream out_, err_;
};

TEST_F(VmctlTest, NoArgsPrintsUsageAndExits2) {
  EXPECT_EQ(Call({}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("usage: fun-vmctl"));
}

TEST_F(VmctlTest, UnknownCommand) {
  EXPECT_EQ(Call({"frobnicate"}), 2);
  EXPECT_EQ(err_.str(),
            "fun-vmctl: unknown command \"frobnicate\": run 'fun-vmctl --help' for the commands\n");
}

TEST_F(VmctlTest, PathsJson) {
  ASSERT_EQ(Call({"paths", "--json"}), 0) << err_.str();
  auto j = nlohmann::json::parse(out_.str());
  EXPECT_EQ(j["state_dir"], home_ + "/state");
  EXPECT_EQ(j["instances_dir"], home_ + "/state/instances");
  EXPECT_EQ(j["os"], "linux");
}

TEST_F(VmctlTest, ConfigShowsDefaultsBeforeCreation) {
  ASSERT_EQ(Call({"config", "--json"}), 0) << err_.str();
  auto j = nlohmann::json::parse(out_.str());
  EXPECT_EQ(j["exists"], false);
  EXPECT_EQ(j["config"]["name"], "default");
  EXPECT_EQ(j["config"]["backend"], "qemu");
  ASSERT_EQ(j["config"]["shares"].size(), 1u);
  EXPECT_EQ(j["config"]["shares"][0]["host_path"], home_);
}

TEST_F(VmctlTest, ConfigReadsTheFileAndReportsItsErrors) {
  std::string dir = home_ + "/state/instances/dev";
  ASSERT_EQ(std::system(("mkdir -p '" + dir + "'").c_str()), 0);  // NOLINT
  std::ofstream(dir + "/config.json") << "{\"cpus\": 4}";
  ASSERT_EQ(Call({"config", "dev", "--json"}), 0) << err_.str();
  auto j = nlohmann::json::parse(out_.str());
  EXPECT_EQ(j["exists"], true);
  EXPECT_EQ(j["config"]["cpus"], 4);
  EXPECT_EQ(j["config"]["name"], "dev");

  std::ofstream(dir + "/config.json") << "{\"cpus\": 400}";
  EXPECT_EQ(Call({"config", "dev"}), 1);
  EXPECT_THAT(err_.str(), HasSubstr("cpus"));
  EXPECT_THAT(err_.str(), HasSubstr("400"));
}

TEST_F(VmctlTest, ConfigNameMustMatchItsDirectory) {
  std::string dir = home_ + "/state/instances/dev";
  ASSERT_EQ(std::system(("mkdir -p '" + dir + "'").c_str()), 0);  // NOLINT
  std::ofstream(dir + "/config.json") << "{\"name\": \"prod\"}";
  EXPECT_EQ(Call({"config", "dev"}), 1);
  EXPECT_THAT(err_.str(), HasSubstr("does not match its directory"));
}

TEST_F(VmctlTest, BadInstanceNameIsRefusedBeforeTouchingPaths) {
  EXPECT_EQ(Call({"config", "../etc"}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("\"../etc\""));
}

TEST_F(VmctlTest, Version) {
  ASSERT_EQ(Call({"version", "--json"}), 0);
  auto j = nlohmann::json::parse(out_.str());
  EXPECT_FALSE(j["version"].get<std::string>().empty());
  EXPECT_EQ(Call({"version", "--bogus"}), 2);
}

}  // namespace
}  // namespace fun::vmctl

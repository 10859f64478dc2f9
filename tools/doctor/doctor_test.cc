// doctor_test.cc: the fun-doctor command line (flags, exit codes, table, JSON) and the runner,
// on FakeDoctorEnv.
#include "tools/doctor/doctor.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "tools/doctor/checks.h"
#include "tools/doctor/fake_doctor_env.h"
#include "tools/doctor/runner.h"

namespace fun::doctor {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

class DoctorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    input_ = {.os = Os::kLinux, .home = "/home/u", .fun_home = "", .xdg_state_home = ""};
    paths_ = ResolvePaths(input_).value();
    env_.MakeHealthy(paths_, "default");
  }

  int Call(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    return ::fun::doctor::Run(args, input_, env_, out_, err_);
  }

  nlohmann::json Json() { return nlohmann::json::parse(out_.str()); }

  PathsInput input_;
  Paths paths_;
  FakeDoctorEnv env_;
  std::ostringstream out_, err_;
};

TEST_F(DoctorTest, HelpPrintsUsageAndExits0) {
  EXPECT_EQ(Call({"--help"}), 0);
  EXPECT_THAT(out_.str(), StartsWith("usage: fun-doctor"));
  EXPECT_THAT(out_.str(), HasSubstr("--check"));
}

TEST_F(DoctorTest, BadUsageExits2WithOneLine) {
  EXPECT_EQ(Call({"--bogus"}), 2);
  EXPECT_THAT(err_.str(), StartsWith("fun-doctor: unknown flag --bogus"));
  EXPECT_EQ(Call({"default"}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("name the instance with --instance"));
  EXPECT_EQ(Call({"--instance", "Bad Name"}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("not a valid instance name"));
  EXPECT_EQ(Call({"--check"}), 2);
  EXPECT_TRUE(out_.str().empty());
}

TEST_F(DoctorTest, DnsFlagsReachFun0016AndBadValuesExit2) {
  EXPECT_EQ(Call({"--json", "--check", "FUN0016", "--dns-name", "registry.example.", "--dns-server",
                  "[fd00::3]:5353"}),
            0);
  ASSERT_EQ(env_.dns_calls.size(), 1u);
  EXPECT_EQ(env_.dns_calls[0].server, "[fd00::3]:5353");
  EXPECT_THAT(Json()[0]["summary"].get<std::string>(), StartsWith("registry.example. resolves"));
  EXPECT_EQ(Call({"--dns-name", "no_such name"}), 2);
  EXPECT_THAT(err_.str(),
              StartsWith("fun-doctor: --dns-name: \"no_such name\" is not a host name"));
  EXPECT_EQ(Call({"--dns-server", "10.0.2.3"}), 2);
  EXPECT_THAT(
      err_.str(),
      StartsWith("fun-doctor: --dns-server: \"10.0.2.3\" is not IP:PORT or [IPv6]:PORT (e.g. "
                 "10.0.2.3:53)"));
  EXPECT_EQ(env_.dns_calls.size(), 1u);
  EXPECT_THAT((Call({"--help"}), out_.str()), HasSubstr("--dns-name"));
}

TEST_F(DoctorTest, UnknownCheckIdExits2AndPointsAtTheList) {
  EXPECT_EQ(Call({"--check", "FUN9999"}), 2);
  EXPECT_EQ(err_.str(),
            "fun-doctor: unknown check \"FUN9999\": `fun-doctor --list` shows the "
            "checks\n");
  EXPECT_TRUE(out_.str().empty());
}

TEST_F(DoctorTest, UnresolvablePathsExit2) {
  input_.home = "";
  EXPECT_EQ(Call({}), 2);
  EXPECT_THAT(err_.str(), StartsWith("fun-doctor: cannot tell where Fun keeps its state"));
}

TEST_F(DoctorTest, HealthyRunExits0WithATableOfPasses) {
  EXPECT_EQ(Call({}), 0);
  std::string out = out_.str();
  EXPECT_THAT(out, StartsWith("fun-doctor: instance default (state dir "
                              "/home/u/.local/state/fun)\n\nID       STATUS CHECK"));
  EXPECT_THAT(out, HasSubstr("FUN0001  PASS   Hypervisor present and executable"));
  EXPECT_THAT(out, HasSubstr("FUN0011  PASS   containerd answers CRI"));
  EXPECT_THAT(out, HasSubstr("\n21 checks: 21 passed, 0 warnings, 0 failed, 0 skipped\n"));
  EXPECT_THAT(out, Not(HasSubstr("hint:")));
  EXPECT_THAT(out, Not(HasSubstr("kvm_pvm loaded")));  // detail lines only with --verbose
  EXPECT_EQ(Call({"--verbose"}), 0);
  EXPECT_THAT(out_.str(), HasSubstr("                kvm_intel/kvm_amd loaded: yes"));
}

TEST_F(DoctorTest, AFailureExits1AndPrintsDetailHintAndPageUnderIt) {
  env_.programs.clear();
  EXPECT_EQ(Call({}), 1);
  std::string out = out_.str();
  EXPECT_THAT(out, HasSubstr("FUN0001  FAIL   Hypervisor present and executable  "
                             "qemu-system-x86_64 not found\n"
                             "                looked for qemu-system-x86_64 in $PATH: "
                             "qemu-system-x86_64 is not in PATH\n"
                             "                hint: install QEMU"));
  EXPECT_THAT(out, HasSubstr("                doc:  docs/troubleshooting/FUN0001.md\n"));
  EXPECT_THAT(out, HasSubstr("1 failed (1 keeps any instance from starting)"));
}

TEST_F(DoctorTest, WarningsAloneExit0) {
  env_.facts.dev_kvm_exists = false;  // TCG
  EXPECT_EQ(Call({}), 0);
  EXPECT_THAT(out_.str(), HasSubstr("FUN0002  WARN"));
  EXPECT_THAT(out_.str(), HasSubstr("docs/troubleshooting/FUN0002.md"));
  EXPECT_THAT(out_.str(), HasSubstr("20 passed, 1 warning, 0 failed"));
}

TEST_F(DoctorTest, JsonIsAnArrayOfResultsWithEveryField) {
  env_.facts.dev_kvm_exists = false;
  EXPECT_EQ(Call({"--json"}), 0);
  nlohmann::json j = Json();
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), AllChecks().size());
  for (const auto& r : j) {
    for (const char* key : {"id", "title", "status", "summary", "detail", "hint", "doc"}) {
      EXPECT_TRUE(r.contains(key)) << key;
    }
    EXPECT_TRUE(r["detail"].is_array());
  }
  EXPECT_EQ(j[0]["id"], "FUN0001");
  EXPECT_EQ(j[0]["status"], "pass");
  EXPECT_EQ(j[1]["status"], "warn");
  EXPECT_EQ(j[1]["doc"], "docs/troubleshooting/FUN0002.md");
  EXPECT_EQ(j[1]["fatal"], true);
}

TEST_F(DoctorTest, CheckRunsOnlyTheNamedChecksOnceEach) {
  EXPECT_EQ(Call({"--json", "--check", "fun0011", "--check", "FUN0011", "--check", "FUN0003"}), 0);
  nlohmann::json j = Json();
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["id"], "FUN0011");
  EXPECT_EQ(j[1]["id"], "FUN0003");
  EXPECT_EQ(env_.cri_calls.size(), 1u);
}

TEST_F(DoctorTest, ACriFailureExits1) {
  env_.cri_version.reset();
  EXPECT_EQ(Call({"--check", "FUN0011"}), 1);
  EXPECT_THAT(out_.str(), HasSubstr("FUN0011  FAIL"));
}

TEST_F(DoctorTest, InstanceFlagChecksThatInstanceAndNamesItInHints) {
  EXPECT_EQ(Call({"--json", "--instance", "dev"}), 0);
  nlohmann::json j = Json();
  EXPECT_EQ(j[8]["id"], "FUN0009");
  EXPECT_EQ(j[8]["status"], "warn");
  EXPECT_EQ(j[8]["hint"], "`fun-vmctl start dev`");
  EXPECT_EQ(j[10]["status"], "skip");
  EXPECT_EQ(j[10]["summary"], "instance dev does not exist yet (`fun-vmctl start dev` creates it)");
}

TEST_F(DoctorTest, JsonSurvivesInvalidUtf8FromTheGuest) {
  env_.AddFile(paths_.InstanceFile("default", InstanceFileKind::kConsoleLog),
               "\xff\xfe Kernel panic - \xc3(\n");
  EXPECT_EQ(Call({"--json", "--check", "FUN0010"}), 1);
  nlohmann::json j = Json();
  EXPECT_EQ(j[0]["status"], "fail");
  EXPECT_THAT(j[0]["detail"][0].get<std::string>(), HasSubstr("Kernel panic"));
}

TEST_F(DoctorTest, FixSaysWhatItDidThenShowsTheChecksAfterIt) {
  env_.ping.guest_time_unix_ns -= 90'000'000'000LL;  // the VM 90 s behind
  std::string dir = paths_.InstanceDir("default");
  env_.AddDir(dir, 0755);
  EXPECT_EQ(Call({}), 1);
  EXPECT_EQ(Call({"--fix"}), 0) << out_.str();
  EXPECT_THAT(out_.str(), HasSubstr("fixed FUN0007: chmod 0700 " + dir + " (was 0755)\n"));
  EXPECT_THAT(out_.str(), HasSubstr("fixed FUN0019: set the VM's clock to the host's"));
  EXPECT_THAT(out_.str(), HasSubstr("21 checks: 21 passed"));
  // Idempotent: the second run has nothing to do.
  EXPECT_EQ(Call({"--fix"}), 0);
  EXPECT_THAT(out_.str(), HasSubstr("\nnothing to fix\n"));
  EXPECT_EQ(env_.sync_calls, 1);
}

TEST_F(DoctorTest, FixWithJsonIsAnObjectOfFixesAndChecksAndAFailedRepairExits1) {
  env_.ping.guest_time_unix_ns -= 90'000'000'000LL;
  env_.sync_error = FailedPreconditionError("time sync: timesync is off in the guest");
  EXPECT_EQ(Call({"--fix", "--json", "--check", "FUN0019"}), 1);
  nlohmann::json j = Json();
  ASSERT_EQ(j["fixes"].size(), 1u) << j;
  EXPECT_EQ(j["fixes"][0]["id"], "FUN0019");
  EXPECT_EQ(j["fixes"][0]["error"], "time sync: timesync is off in the guest");
  EXPECT_TRUE(j["fixes"][0]["actions"].empty());
  ASSERT_EQ(j["checks"].size(), 1u);
  EXPECT_EQ(j["checks"][0]["status"], "fail");
  // Without --fix nothing is repaired, even what could be.
  EXPECT_EQ(Call({"--check", "FUN0019"}), 1);
  EXPECT_EQ(env_.sync_calls, 1);
}

TEST_F(DoctorTest, ListShowsTheCatalog) {
  EXPECT_EQ(Call({"--list"}), 0);
  EXPECT_THAT(out_.str(), HasSubstr("FUN0001  Hypervisor present and executable"));
  EXPECT_THAT(out_.str(), HasSubstr("docs/troubleshooting/FUN0012.md"));
  EXPECT_EQ(Call({"--list", "--json"}), 0);
  EXPECT_EQ(Json().size(), AllChecks().size());
  EXPECT_TRUE(env_.commands_run.empty());  // listing runs nothing
}

TEST(Runner, AThrowingProbeIsAFailureOfThatCheckNotACrash) {
  FakeDoctorEnv env;
  Paths paths = ResolvePaths({.os = Os::kLinux, .home = "/h"}).value();
  DoctorContext ctx(env, paths, "x");
  Check boom{.id = "FUN9001",
             .title = "boom",
             .hint = "h {instance} {instance}",
             .doc = "d",
             .probe = [](DoctorContext&) -> CheckResult { throw std::runtime_error("oops"); }};
  Check fine{
      .id = "FUN9002", .title = "fine", .hint = "unused", .doc = "d", .probe = [](DoctorContext&) {
        return CheckResult::Warn("meh").WithHint("do {instance}");
      }};
  Report r = RunChecks(ctx, {&boom, &fine});
  ASSERT_EQ(r.findings.size(), 2u);
  EXPECT_EQ(r.findings[0].result.status, CheckStatus::kFail);
  EXPECT_EQ(r.findings[0].result.summary, "the check itself failed: oops");
  EXPECT_EQ(r.findings[0].hint, "h x x");
  EXPECT_EQ(r.findings[1].hint, "do x");  // the result's hint wins over the check's
  EXPECT_TRUE(r.Failed());
  EXPECT_EQ(r.Count(CheckStatus::kWarn), 1u);
}

}  // namespace
}  // namespace fun::doctor

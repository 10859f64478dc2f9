#include "lib/base/log.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace fun::log {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");  // NOLINT(concurrency-mt-unsafe)
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/fun-log-test-XXXXXX";
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }  // NOLINT
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(LogLevelTest, ParseAndName) {
  EXPECT_EQ(*ParseLevel("debug"), Level::kDebug);
  EXPECT_EQ(*ParseLevel("INFO"), Level::kInfo);
  EXPECT_EQ(*ParseLevel("warn"), Level::kWarning);
  EXPECT_EQ(*ParseLevel("Warning"), Level::kWarning);
  EXPECT_EQ(*ParseLevel("error"), Level::kError);
  EXPECT_EQ(*ParseLevel("off"), Level::kOff);
  StatusOr<Level> bad = ParseLevel("loud");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("\"loud\""));
  EXPECT_THAT(bad.status().message(), HasSubstr("debug, info, warning, error or off"));
  EXPECT_EQ(LevelName(Level::kWarning), "warning");
}

TEST(LoggerTest, StderrFiltersByLevelInBriefForm) {
  SimulatedClock clock;
  Logger logger(clock);
  std::vector<std::string> lines;
  logger.SetStderrSink([&](std::string_view l) { lines.emplace_back(l); });
  logger.SetStderrFormat(StderrFormat::kBrief, "fun-vmctl");
  logger.SetStderrLevel(Level::kInfo);
  logger.Write(Level::kDebug, __FILE__, __LINE__, "hidden");
  logger.Write(Level::kInfo, __FILE__, __LINE__, "booting");
  logger.Write(Level::kError, __FILE__, __LINE__, "qemu exited with 1\n");
  EXPECT_THAT(lines, ElementsAre("fun-vmctl: booting\n", "fun-vmctl: error: qemu exited with 1\n"));
}

TEST(LoggerTest, FullFormatHasTimeLevelPidAndSource) {
  SimulatedClock clock;
  Logger logger(clock);
  std::vector<std::string> lines;
  logger.SetStderrSink([&](std::string_view l) { lines.emplace_back(l); });
  logger.SetStderrFormat(StderrFormat::kFull);
  logger.Write(Level::kWarning, "/src/lib/vm/hostd.cc", 42, "slow boot");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "2026-01-01T00:00:00.000Z W " + std::to_string(::getpid()) +
                          " hostd.cc:42] slow boot\n");
}

TEST(LoggerTest, FileGetsEverythingAtItsLevelWithMode0600) {
  TempDir dir;
  SimulatedClock clock;
  Logger logger(clock);
  std::vector<std::string> stderr_lines;
  logger.SetStderrSink([&](std::string_view l) { stderr_lines.emplace_back(l); });
  std::string path = dir.path() + "/hostd.log";
  ASSERT_TRUE(logger.OpenFile(path, Level::kDebug).ok());
  EXPECT_EQ(logger.file_path(), path);
  EXPECT_TRUE(logger.Enabled(Level::kDebug));
  logger.Write(Level::kDebug, "a.cc", 1, "one");
  clock.Advance(std::chrono::milliseconds(1500));
  logger.Write(Level::kWarning, "a.cc", 2, "two");
  logger.CloseFile();
  EXPECT_FALSE(logger.Enabled(Level::kDebug));

  std::string content = ReadFile(path);
  std::string pid = std::to_string(::getpid());
  EXPECT_EQ(content, "2026-01-01T00:00:00.000Z D " + pid + " a.cc:1] one\n" +
                         "2026-01-01T00:00:01.500Z W " + pid + " a.cc:2] two\n");
  EXPECT_THAT(stderr_lines, ElementsAre("fun: warning: two\n"));
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(LoggerTest, FileAppends) {
  TempDir dir;
  std::string path = dir.path() + "/x.log";
  for (int i = 0; i < 2; ++i) {
    Logger logger;
    logger.SetStderrLevel(Level::kOff);
    ASSERT_TRUE(logger.OpenFile(path, Level::kInfo).ok());
    logger.Write(Level::kInfo, "x.cc", i, "line");
  }
  std::string content = ReadFile(path);
  EXPECT_EQ(std::count(content.begin(), content.end(), '\n'), 2);
}

TEST(LoggerTest, OpenFileInMissingDirIsAClearError) {
  Logger logger;
  Status s = logger.OpenFile("/nonexistent-dir-for-fun-test/x.log");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::kNotFound);
  EXPECT_THAT(s.message(), StartsWith("opening log file /nonexistent-dir-for-fun-test/x.log: "));
}

TEST(LoggerTest, MacroFormatsOnlyWhenEnabled) {
  std::vector<std::string> lines;
  Logger& logger = Default();
  logger.SetStderrSink([&](std::string_view l) { lines.emplace_back(l); });
  logger.SetStderrFormat(StderrFormat::kBrief, "t");
  logger.SetStderrLevel(Level::kWarning);
  int formatted = 0;
  auto count = [&] {
    ++formatted;
    return 1;
  };
  FUN_LOG(Debug, "n={}", count());
  FUN_LOG(Error, "n={} status={}", count(), NotFoundError("gone"));
  logger.SetStderrSink(nullptr);
  EXPECT_EQ(formatted, 1);
  EXPECT_THAT(lines, ElementsAre("t: error: n=1 status=NOT_FOUND: gone\n"));
}

}  // namespace
}  // namespace fun::log

#include "lib/cri/log_line.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace fun::cri {
namespace {

TEST(ParseLogLineTest, FullAndPartialLinesOfBothStreams) {
  auto e = ParseLogLine("2026-11-29T13:17:26.179496371Z stdout F hello world");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->time, "2026-11-29T13:17:26.179496371Z");
  EXPECT_EQ(e->stream, LogStream::kStdout);
  EXPECT_FALSE(e->partial);
  EXPECT_EQ(e->message, "hello world");

  e = ParseLogLine("2026-11-29T13:17:26.1+01:00 stderr P part");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->stream, LogStream::kStderr);
  EXPECT_TRUE(e->partial);
  EXPECT_EQ(e->message, "part");
}

TEST(ParseLogLineTest, EmptyMessageAndExtraTagsAndSpacesInTheMessage) {
  auto e = ParseLogLine("2026-11-29T13:17:26.179496371Z stdout F");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->message, "");
  e = ParseLogLine("2026-11-29T13:17:26.179496371Z stdout F:x  two  spaces ");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->message, " two  spaces ");
}

TEST(ParseLogLineTest, MalformedLinesSayWhatIsWrong) {
  EXPECT_NE(ParseLogLine("").status().message().find("no space after the time"), std::string::npos);
  EXPECT_NE(ParseLogLine("yesterday stdout F x").status().message().find("RFC 3339"),
            std::string::npos);
  EXPECT_NE(ParseLogLine("2026-11-29T13:17:26.1Z stdin F x").status().message().find("stream"),
            std::string::npos);
  EXPECT_NE(ParseLogLine("2026-11-29T13:17:26.1Z stdout X x").status().message().find("tag"),
            std::string::npos);
  EXPECT_FALSE(ParseLogLine("2026-11-29T13:17:26.1Z stdout").ok());
}

struct Collected {
  std::vector<std::string> messages;
  int errors = 0;
  LogSplitter::Sink sink() {
    return [this](const StatusOr<LogEntry>& e) {
      if (e.ok()) {
        messages.emplace_back(e->message);
      } else {
        ++errors;
      }
    };
  }
};

TEST(LogSplitterTest, LinesSplitAcrossChunksAreJoined) {
  const std::string log =
      "2026-11-29T13:17:26.1Z stdout F one\n"
      "2026-11-29T13:17:26.2Z stderr F two\n"
      "2026-11-29T13:17:26.3Z stdout F three\n";
  for (size_t chunk = 1; chunk <= log.size(); ++chunk) {
    Collected c;
    LogSplitter split;
    for (size_t i = 0; i < log.size(); i += chunk) split.Feed(log.substr(i, chunk), c.sink());
    split.Finish(c.sink());
    ASSERT_EQ(c.messages, (std::vector<std::string>{"one", "two", "three"})) << "chunk " << chunk;
    EXPECT_EQ(c.errors, 0);
  }
}

TEST(LogSplitterTest, AnUnterminatedLastLineIsParsedByFinish) {
  Collected c;
  LogSplitter split;
  split.Feed("2026-11-29T13:17:26.1Z stdout F one\n2026-11-29T13:17:26.2Z stdout F tw", c.sink());
  EXPECT_EQ(c.messages, std::vector<std::string>{"one"});
  split.Finish(c.sink());
  EXPECT_EQ(c.messages, (std::vector<std::string>{"one", "tw"}));
}

TEST(LogSplitterTest, AnOverlongLineIsCutAndTheNextLineStillParses) {
  Collected c;
  LogSplitter split(64);
  std::string longline = "2026-11-29T13:17:26.1Z stdout F " + std::string(500, 'x') + "\n";
  split.Feed(longline.substr(0, 100), c.sink());
  split.Feed(longline.substr(100), c.sink());
  split.Feed("2026-11-29T13:17:26.2Z stdout F next\n", c.sink());
  ASSERT_EQ(c.messages.size(), 2u);
  EXPECT_EQ(c.messages[0].size(), 64u - 32u);  // what fit in 64 bytes after the 32-byte prefix
  EXPECT_EQ(c.messages[1], "next");
  EXPECT_EQ(c.errors, 0);
}

TEST(LogSplitterTest, GarbageIsAnErrorPerLineNotACrash) {
  Collected c;
  LogSplitter split;
  static constexpr char kBytes[] = "\0\xff\n\n2026-11-29T13:17:26.2Z stdout F ok\n";
  split.Feed(std::string_view(kBytes, sizeof(kBytes) - 1), c.sink());
  EXPECT_EQ(c.errors, 2);
  EXPECT_EQ(c.messages, std::vector<std::string>{"ok"});
}

TEST(LogTailTest, KeepsTheLastNLinesWithTheirPartialPieces) {
  LogTail tail(2);
  tail.Add("2026-11-29T13:17:26.1Z stdout F one");
  tail.Add("2026-11-29T13:17:26.2Z stdout P tw");
  tail.Add("2026-11-29T13:17:26.3Z stdout F o");
  tail.Add("2026-11-29T13:17:26.4Z stdout F three");
  ASSERT_EQ(tail.lines().size(), 3u);
  EXPECT_EQ(tail.lines()[0], "2026-11-29T13:17:26.2Z stdout P tw");
  EXPECT_EQ(tail.lines()[2], "2026-11-29T13:17:26.4Z stdout F three");

  LogTail none(0);
  none.Add("2026-11-29T13:17:26.1Z stdout F one");
  EXPECT_TRUE(none.lines().empty());
}

}  // namespace
}  // namespace fun::cri

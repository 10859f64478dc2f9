// The pure parts of pull progress (IngestTracker, RenderPullLine) and PullProgress driven by a
// scripted IngestSource. No containerd here: pull_progress_registry_test.cc pulls for real.
#include "lib/cri/pull_progress.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <deque>
#include <mutex>
#include <sstream>
#include <thread>

namespace fun::cri {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

Ingest Layer(std::string digest, int64_t offset, int64_t total, int64_t updated = 0) {
  return Ingest{.ref = "layer-sha256:" + std::move(digest),
                .offset = offset,
                .total = total,
                .started_at_ns = 1,
                .updated_at_ns = updated};
}

// --- IngestTracker ----------------------------------------------------------------------------

TEST(IngestTrackerTest, CountsLayersSeenAndDoneWhenTheirIngestIsGone) {
  IngestTracker t;
  t.Baseline({});
  EXPECT_TRUE(t.snapshot().from_content);
  EXPECT_EQ(t.snapshot().layers_seen, 0);

  t.Observe({Layer("a", 100, 1000), Layer("b", 0, 3000)});
  PullSnapshot s = t.snapshot();
  EXPECT_EQ(s.layers_seen, 2);
  EXPECT_EQ(s.layers_done, 0);
  EXPECT_EQ(s.bytes_done, 100u);
  EXPECT_EQ(s.bytes_total, 4000u);

  // a finished between two polls (its last offset was 100): containerd deleted it on commit.
  t.Observe({Layer("b", 2000, 3000), Layer("c", 10, 500)});
  s = t.snapshot();
  EXPECT_EQ(s.layers_seen, 3);
  EXPECT_EQ(s.layers_done, 1);
  EXPECT_EQ(s.bytes_done, 1000u + 2000u + 10u);
  EXPECT_EQ(s.bytes_total, 4500u);

  t.Observe({});
  s = t.snapshot();
  EXPECT_EQ(s.layers_done, 3);
  EXPECT_EQ(s.bytes_done, 4500u);
  EXPECT_EQ(s.bytes_total, 4500u);
  EXPECT_EQ(s.polls, 3);
  EXPECT_EQ(s.Describe(), "3/3 layers, 4.5kB/4.5kB");
}

TEST(IngestTrackerTest, ManifestsAndConfigsAreNotLayers) {
  IngestTracker t;
  t.Observe({Ingest{.ref = "manifest-sha256:m", .offset = 10, .total = 500},
             Ingest{.ref = "config-sha256:c", .offset = 0, .total = 900},
             Ingest{.ref = "index-sha256:i", .offset = 0, .total = 300}, Layer("a", 5, 50)});
  EXPECT_EQ(t.snapshot().layers_seen, 1);
  EXPECT_EQ(t.snapshot().bytes_total, 50u);
  EXPECT_FALSE(IsLayerIngest("manifest-sha256:m"));
  EXPECT_TRUE(IsLayerIngest("layer-sha256:a"));
}

TEST(IngestTrackerTest, IngestsThereBeforeThePullAreIgnoredUntilTheyMove) {
  IngestTracker t;
  // A download some other pull left behind, and one another pull is making right now.
  t.Baseline({Layer("stale", 40, 100, /*updated=*/7), Layer("other", 10, 100, 7)});
  t.Observe({Layer("stale", 40, 100, 7), Layer("mine", 1, 10)});
  EXPECT_EQ(t.snapshot().layers_seen, 1);
  EXPECT_EQ(t.snapshot().bytes_total, 10u);
  // The stale one is resumed by this pull (it moves): from now on it counts.
  t.Observe({Layer("stale", 60, 100, 8), Layer("mine", 10, 10)});
  EXPECT_EQ(t.snapshot().layers_seen, 2);
  EXPECT_EQ(t.snapshot().bytes_done, 70u);
  EXPECT_EQ(t.snapshot().bytes_total, 110u);
}

TEST(IngestTrackerTest, UnknownTotalsAndNegativeNumbersAreBounded) {
  IngestTracker t;
  t.Observe({Layer("a", 300, 0), Layer("b", -5, -1)});
  EXPECT_EQ(t.snapshot().bytes_total, 300u);
  EXPECT_EQ(t.snapshot().bytes_done, 300u);
}

TEST(PullSnapshotTest, DescribesNothingSeenYetAsResolving) {
  EXPECT_EQ(PullSnapshot{}.Describe(), "resolving");
}

// --- RenderPullLine ---------------------------------------------------------------------------

PullSnapshot Halfway() {
  return PullSnapshot{.from_content = true,
                      .layers_seen = 3,
                      .layers_done = 1,
                      .bytes_done = 3'100'000,
                      .bytes_total = 6'300'000,
                      .polls = 5};
}

TEST(RenderPullLineTest, WideTerminalShowsBarBytesLayersAndTime) {
  std::string line = RenderPullLine(
      {.image = "127.0.0.1:5000/fun/layers:test", .snapshot = Halfway(), .elapsed_seconds = 0.84},
      100);
  // 100 columns: 30 for the image, 29 for the counts, 12 for the rest, 29 for the bar (27 inside;
  // 3.1 of 6.3 MB is 13 of them).
  EXPECT_EQ(line,
            "⠋ pulling 127.0.0.1:5000/fun/layers:test [=============>             ] "
            "3.1MB/6.3MB  1/3 layers  0.8s");
  EXPECT_LE(DisplayWidth(line), 100u);
}

TEST(RenderPullLineTest, BarIsFullWhenEverythingIsDone) {
  PullSnapshot s = Halfway();
  s.layers_done = 3;
  s.bytes_done = s.bytes_total;
  std::string line = RenderPullLine({.image = "busybox", .snapshot = s, .frame = 2}, 80);
  EXPECT_THAT(line, AllOf(StartsWith("⠹ pulling busybox ["), HasSubstr("=]"),
                          HasSubstr("6.3MB/6.3MB  3/3 layers")));
}

TEST(RenderPullLineTest, NarrowTerminalsDropTheBarThenShortenTheImage) {
  const PullView v{.image = "registry.example.com/some/long/repository:v1.2.3",
                   .snapshot = Halfway(),
                   .elapsed_seconds = 12.5};
  std::string no_bar = RenderPullLine(v, 90);
  EXPECT_THAT(no_bar, Not(HasSubstr("[")));
  EXPECT_THAT(no_bar, HasSubstr("registry.example.com/some/long/repository:v1.2.3 3.1MB/6.3MB"));
  std::string short_image = RenderPullLine(v, 60);
  EXPECT_THAT(short_image, AllOf(HasSubstr("…"), HasSubstr("v1.2.3 3.1MB/6.3MB"),
                                 HasSubstr("1/3 layers  12.5s")));
  EXPECT_LE(DisplayWidth(short_image), 60u);
}

TEST(RenderPullLineTest, NeverWiderThanAskedAtAnyWidth) {
  for (const PullSnapshot& s : {PullSnapshot{}, Halfway()}) {
    for (size_t w = 0; w <= 140; ++w) {
      std::string line = RenderPullLine(
          {.image = "127.0.0.1:5000/fun/layers:test", .snapshot = s, .elapsed_seconds = 123.4}, w);
      EXPECT_LE(DisplayWidth(line), w) << line;
      EXPECT_EQ(line.find('\n'), std::string::npos);
      EXPECT_EQ(line.find('\r'), std::string::npos);
    }
  }
}

TEST(RenderPullLineTest, WithoutLayersItIsASpinnerLine) {
  std::string line = RenderPullLine(
      {.image = "busybox", .snapshot = {}, .elapsed_seconds = 1.25, .frame = 11}, 80);
  EXPECT_EQ(line, "⠙ pulling busybox  1.2s");
}

TEST(HumanBytesTest, SiUnitsLikeDocker) {
  EXPECT_EQ(HumanBytes(0), "0B");
  EXPECT_EQ(HumanBytes(999), "999B");
  EXPECT_EQ(HumanBytes(3100), "3.1kB");
  EXPECT_EQ(HumanBytes(6'300'000), "6.3MB");
  EXPECT_EQ(HumanBytes(1'200'000'000), "1.20GB");
}

// --- PullProgress with a scripted source --------------------------------------------------------

// Answers from a script; the last answer repeats.
class ScriptedSource final : public IngestSource {
 public:
  explicit ScriptedSource(std::deque<StatusOr<std::vector<Ingest>>> script)
      : script_(std::move(script)) {}
  StatusOr<std::vector<Ingest>> ListIngests() override {
    std::lock_guard<std::mutex> lock(mu_);
    ++*calls_;
    StatusOr<std::vector<Ingest>> r = script_.front();
    if (script_.size() > 1) script_.pop_front();
    return r;
  }
  std::shared_ptr<int> calls() { return calls_; }

 private:
  std::mutex mu_;
  std::deque<StatusOr<std::vector<Ingest>>> script_;
  std::shared_ptr<int> calls_ = std::make_shared<int>(0);
};

TEST(PullProgressTest, PlainOutputPrintsLayerCountsAndFinishSeesTheEnd) {
  // Baseline, two polls mid-download, then (repeated) nothing left: the pull ended.
  auto source = std::make_unique<ScriptedSource>(std::deque<StatusOr<std::vector<Ingest>>>{
      std::vector<Ingest>{},
      std::vector<Ingest>{Layer("a", 10, 100), Layer("b", 0, 200)},
      std::vector<Ingest>{Layer("b", 150, 200)},
      std::vector<Ingest>{},
  });
  std::ostringstream out;
  std::vector<PullSnapshot> seen;
  std::mutex seen_mu;
  PullProgress p("/nonexistent.sock", "img:1", out, /*terminal=*/false,
                 {.interval = std::chrono::milliseconds(1),
                  .source = std::move(source),
                  .on_snapshot = [&](const PullSnapshot& s) {
                    std::lock_guard<std::mutex> lock(seen_mu);
                    seen.push_back(s);
                  }});
  // However many polls ran meanwhile, Finish polls once more: the script's end is reached
  // only if the loop already used the middle answers, so wait for them through the callback.
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(seen_mu);
      if (seen.size() >= 3) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  PullSnapshot last = p.Finish("pulled img:1");
  EXPECT_TRUE(p.content_service());
  EXPECT_EQ(last.layers_seen, 2);
  EXPECT_EQ(last.layers_done, 2);
  EXPECT_EQ(last.bytes_done, 300u);
  EXPECT_EQ(last.bytes_total, 300u);
  const std::string text = out.str();
  EXPECT_THAT(text, StartsWith("pulling img:1 ("));
  EXPECT_THAT(text, HasSubstr("pulling img:1: 0/2 layers, 10B/300B ("));
  EXPECT_THAT(text, HasSubstr("pulling img:1: 1/2 layers, 250B/300B ("));
  EXPECT_THAT(text, HasSubstr("pulling img:1: 2/2 layers, 300B/300B ("));
  EXPECT_THAT(text, HasSubstr("\npulled img:1\n"));
  // Snapshots only grow.
  std::lock_guard<std::mutex> lock(seen_mu);
  for (size_t i = 1; i < seen.size(); ++i) {
    EXPECT_GE(seen[i].bytes_done, seen[i - 1].bytes_done);
    EXPECT_GE(seen[i].layers_done, seen[i - 1].layers_done);
  }
  // Finish twice: the same snapshot, nothing printed.
  const std::string before = out.str();
  EXPECT_EQ(p.Finish("again").bytes_done, 300u);
  EXPECT_EQ(out.str(), before);
}

TEST(PullProgressTest, UnimplementedContentServiceIsASpinnerAndIsNotAskedAgain) {
  auto source = std::make_unique<ScriptedSource>(std::deque<StatusOr<std::vector<Ingest>>>{
      UnimplementedError("unknown service containerd.services.content.v1.Content")});
  std::shared_ptr<int> calls = source->calls();
  std::ostringstream out;
  PullProgress p(
      "/nonexistent.sock", "busybox", out, /*terminal=*/true,
      {.interval = std::chrono::milliseconds(1), .width = 80, .source = std::move(source)});
  PullSnapshot last = p.Finish("done");
  EXPECT_FALSE(p.content_service());
  EXPECT_FALSE(last.from_content);
  EXPECT_EQ(*calls, 1);
  // A spinner line, cleared, then the final line; no error shown.
  EXPECT_THAT(out.str(), AllOf(StartsWith("\r"), HasSubstr(" pulling busybox  "),
                               HasSubstr("\rdone\n"), Not(HasSubstr("unknown service"))));
}

TEST(PullProgressTest, UnreachableContentServiceKeepsTryingQuietly) {
  auto source = std::make_unique<ScriptedSource>(std::deque<StatusOr<std::vector<Ingest>>>{
      UnavailableError("connection refused"), std::vector<Ingest>{Layer("a", 5, 10)},
      std::vector<Ingest>{}});
  std::ostringstream out;
  PullProgress p("/nonexistent.sock", "busybox", out, /*terminal=*/false,
                 {.interval = std::chrono::milliseconds(1), .source = std::move(source)});
  PullSnapshot last = p.Finish("");
  EXPECT_TRUE(p.content_service());
  EXPECT_TRUE(last.from_content);
  EXPECT_THAT(out.str(), Not(HasSubstr("connection refused")));
}

TEST(PullProgressTest, TerminalLinesAreRedrawnInPlaceAndCleared) {
  auto source = std::make_unique<ScriptedSource>(std::deque<StatusOr<std::vector<Ingest>>>{
      std::vector<Ingest>{}, std::vector<Ingest>{Layer("a", 50, 100)}, std::vector<Ingest>{}});
  std::ostringstream out;
  PullProgress p("/nonexistent.sock", "img", out, /*terminal=*/true,
                 {.interval = std::chrono::hours(1), .width = 81, .source = std::move(source)});
  // The loop waits an hour between polls: the only poll after the baseline is Finish's.
  PullSnapshot last = p.Finish("");
  EXPECT_EQ(last.layers_seen, 1);
  const std::string text = out.str();
  EXPECT_THAT(text, StartsWith("\r⠋ pulling img  0.0s"));
  EXPECT_EQ(text.find('\n'), std::string::npos);
  EXPECT_EQ(text.back(), '\r');
}

}  // namespace
}  // namespace fun::cri

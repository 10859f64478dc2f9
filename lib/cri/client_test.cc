// Tests of CriClient against a real containerd (ContainerdFixture: one per test, in a temp dir
// of its own), plus the failure paths that need no containerd: no socket, a stale socket, a
// peer that never answers, and WaitUntilReady's give-up on a simulated clock.
#include "lib/cri/client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "lib/base/clock.h"
#include "lib/base/socket.h"
#include "lib/base/status.h"
#include "lib/cri/testing/containerd_fixture.h"

namespace fun::cri {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using ContainerdFixture = ::fun::cri::testing::ContainerdFixture;
using ContainerdFixtureOptions = ::fun::cri::testing::ContainerdFixtureOptions;

milliseconds Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - t);
}

// A short temp dir (unix socket paths must stay under 108 bytes), removed at the end.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/fun-cri-test.XXXXXX";
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::unique_ptr<CriClient> MustConnect(const std::string& path, CriClientOptions options = {}) {
  auto c = CriClient::Connect(path, options);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(c).value() : nullptr;
}

// --- no containerd needed ----------------------------------------------------------------------

TEST(CriClientConnect, ValidatesTheSocketPath) {
  auto empty = CriClient::Connect("");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), Code::kInvalidArgument);

  auto long_path = CriClient::Connect("/tmp/" + std::string(120, 'x') + ".sock");
  ASSERT_FALSE(long_path.ok());
  EXPECT_EQ(long_path.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(long_path.status().message(), HasSubstr("at most 107"));

  // Relative paths are made absolute; nothing is dialled yet, so a missing socket is fine.
  auto rel = CriClient::Connect("sub/../containerd.sock");
  ASSERT_TRUE(rel.ok()) << rel.status();
  EXPECT_EQ((*rel)->socket_path(), (std::filesystem::current_path() / "containerd.sock").string());
}

TEST(RuntimeStatusTest, DescribeSaysWhatIsNotReadyAndWhy) {
  RuntimeStatus st;
  st.runtime_ready = true;
  st.conditions = {{.type = "RuntimeReady", .status = true},
                   {.type = "NetworkReady",
                    .status = false,
                    .reason = "NetworkPluginNotReady",
                    .message = "cni plugin not initialized"}};
  EXPECT_EQ(st.Describe(),
            "runtime ready, network not ready (NetworkPluginNotReady: cni plugin not initialized)");
  ASSERT_NE(st.Find(kNetworkReady), nullptr);
  EXPECT_EQ(st.Find("Other"), nullptr);
  st.network_ready = true;
  EXPECT_EQ(st.Describe(), "runtime ready, network ready");
}

TEST(CriClientDeadSocket, MissingSocketIsUnavailableAtOnce) {
  TempDir dir;
  auto cri = MustConnect(dir.path() + "/missing.sock");
  ASSERT_NE(cri, nullptr);
  const auto start = std::chrono::steady_clock::now();
  auto v = cri->Version({.timeout = seconds(10)});
  const milliseconds took = Since(start);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), Code::kUnavailable) << v.status();
  EXPECT_THAT(v.status().message(), StartsWith("CRI Version: cannot reach containerd on " +
                                               dir.path() + "/missing.sock"));
  EXPECT_THAT(v.status().message(), HasSubstr("No such file or directory"));
  EXPECT_LT(took, seconds(2)) << "a missing socket must fail fast, not wait for the deadline";
}

TEST(CriClientDeadSocket, StaleSocketFileIsUnavailableAtOnce) {
  TempDir dir;
  const std::string path = dir.path() + "/stale.sock";
  {
    // Bind and close: the socket file stays, nobody listens (a containerd that died).
    auto l = Listen(SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = path});
    ASSERT_TRUE(l.ok()) << l.status();
  }
  ASSERT_TRUE(std::filesystem::exists(path));
  auto cri = MustConnect(path);
  ASSERT_NE(cri, nullptr);
  const auto start = std::chrono::steady_clock::now();
  auto st = cri->Status({.timeout = seconds(10)});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.status().code(), Code::kUnavailable) << st.status();
  EXPECT_THAT(st.status().message(), StartsWith("CRI Status: "));
  EXPECT_THAT(st.status().message(), HasSubstr("Connection refused"));
  EXPECT_LT(Since(start), seconds(2));
}

TEST(CriClientDeadSocket, SilentPeerEndsAtTheDeadline) {
  TempDir dir;
  const std::string path = dir.path() + "/silent.sock";
  // Listens, never accepts: the connection sits in the backlog and nobody speaks HTTP/2.
  auto l = Listen(SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = path});
  ASSERT_TRUE(l.ok()) << l.status();
  auto cri = MustConnect(path);
  ASSERT_NE(cri, nullptr);
  const auto start = std::chrono::steady_clock::now();
  auto imgs = cri->ListImages({.timeout = milliseconds(300)});
  const milliseconds took = Since(start);
  ASSERT_FALSE(imgs.ok());
  EXPECT_EQ(imgs.status().code(), Code::kDeadlineExceeded) << imgs.status();
  EXPECT_THAT(imgs.status().message(),
              StartsWith("CRI ListImages: no reply from containerd on " + path + " within 0.3 s"));
  EXPECT_GE(took, milliseconds(290));
  EXPECT_LT(took, seconds(3));
}

TEST(CriClientWaitUntilReady, GivesUpAtTheDeadlineOnItsClock) {
  TempDir dir;
  auto cri = MustConnect(dir.path() + "/never.sock");
  ASSERT_NE(cri, nullptr);
  SimulatedClock clock;
  std::vector<ReadyProgress> seen;
  const auto start = std::chrono::steady_clock::now();
  auto ready =
      cri->WaitUntilReady({.timeout = seconds(2),
                           .poll_interval = milliseconds(500),
                           .clock = &clock,
                           .on_progress = [&](const ReadyProgress& p) { seen.push_back(p); }});
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_FALSE(*ready);
  // Polls at 0, 0.5, 1 and 1.5 s of simulated time, then stops: a poll at 2 s would have no
  // time left to answer (kMinPollCallTimeout), and nothing sleeps past the deadline.
  ASSERT_EQ(kMinPollCallTimeout, milliseconds(500));
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(clock.TotalSlept(), milliseconds(1500));
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].attempt, static_cast<int>(i) + 1);
    EXPECT_EQ(seen[i].error.code(), Code::kUnavailable) << seen[i].error;
    EXPECT_EQ(seen[i].Describe(), "containerd socket not there yet");
    EXPECT_FALSE(seen[i].ready);
  }
  EXPECT_LT(Since(start), seconds(5));
}

// --- against a real containerd -------------------------------------------------------------

class CriClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (Status why = ContainerdFixture::CanRun(); !why.ok()) GTEST_SKIP() << why;
  }

  void TearDown() override {
    if (HasFailure() && ctd_ != nullptr) {
      std::fprintf(stderr, "containerd log (%s), last lines:\n%s", ctd_->log_path().c_str(),
                   ctd_->LogTail().c_str());
    }
  }

  // Starts containerd and connects client_; ASSERTs (callers wrap it in ASSERT_NO_FATAL_FAILURE).
  void StartContainerd(ContainerdFixtureOptions options = {}) {
    auto f = ContainerdFixture::Create(std::move(options));
    ASSERT_TRUE(f.ok()) << f.status();
    ctd_ = std::move(f).value();
    std::printf(
        "containerd (%s snapshotter) in %s: socket up after %lld ms, CRI ready after %lld ms\n",
        ctd_->snapshotter().c_str(), ctd_->dir().c_str(),
        static_cast<long long>(ctd_->socket_up_after().count()),
        static_cast<long long>(ctd_->ready_after().count()));
    RecordProperty("containerd_socket_up_ms", static_cast<int>(ctd_->socket_up_after().count()));
    RecordProperty("containerd_cri_ready_ms", static_cast<int>(ctd_->ready_after().count()));
    client_ = MustConnect(ctd_->socket_path());
    ASSERT_NE(client_, nullptr);
  }

  std::unique_ptr<ContainerdFixture> ctd_;
  std::unique_ptr<CriClient> client_;
};

TEST_F(CriClientTest, VersionIsContainerdSpeakingV1) {
  ASSERT_NO_FATAL_FAILURE(StartContainerd());
  auto v = client_->Version();
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->runtime_name, "containerd");
  EXPECT_EQ(v->runtime_api_version, "v1");
  EXPECT_FALSE(v->runtime_version.empty());
}

// The fixture's fallback where overlay cannot be mounted: CRI must come up on native too.
TEST_F(CriClientTest, NativeSnapshotterFallbackRuns) {
  ContainerdFixtureOptions options;
  options.snapshotter = "native";
  ASSERT_NO_FATAL_FAILURE(StartContainerd(options));
  EXPECT_EQ(ctd_->snapshotter(), "native");
  auto st = client_->Status();
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_TRUE(st->runtime_ready) << st->Describe();
}

TEST_F(CriClientTest, NetworkBecomesReadyOnceACniConfigExists) {
  ASSERT_NO_FATAL_FAILURE(StartContainerd());
  auto st = client_->Status();
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_TRUE(st->runtime_ready);
  EXPECT_FALSE(st->network_ready);
  const RuntimeCondition* net = st->Find(kNetworkReady);
  ASSERT_NE(net, nullptr);
  EXPECT_FALSE(net->status);
  EXPECT_EQ(net->reason, "NetworkPluginNotReady");
  EXPECT_THAT(st->Describe(), HasSubstr("runtime ready, network not ready (NetworkPluginNotReady"));

  // Ready without the network: NetworkReady is reported, not required.
  auto runtime_only = client_->WaitUntilReady({.timeout = seconds(5)});
  ASSERT_TRUE(runtime_only.ok()) << runtime_only.status();
  EXPECT_TRUE(*runtime_only);

  auto conf = ctd_->WriteCniConfig();
  ASSERT_TRUE(conf.ok()) << conf.status();
  std::vector<ReadyProgress> seen;
  const auto start = std::chrono::steady_clock::now();
  auto ready =
      client_->WaitUntilReady({.timeout = seconds(20),
                               .poll_interval = milliseconds(50),
                               .require_network = true,
                               .on_progress = [&](const ReadyProgress& p) { seen.push_back(p); }});
  ASSERT_TRUE(ready.ok()) << ready.status();
  ASSERT_TRUE(*ready) << (seen.empty() ? "no progress" : seen.back().Describe());
  std::printf("NetworkReady %lld ms after the conflist was written (%zu polls)\n",
              static_cast<long long>(Since(start).count()), seen.size());
  ASSERT_FALSE(seen.empty());
  EXPECT_TRUE(seen.back().ready);
  EXPECT_EQ(seen.back().Describe(), "runtime ready, network ready");

  st = client_->Status();
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_TRUE(st->runtime_ready);
  EXPECT_TRUE(st->network_ready);
}

TEST_F(CriClientTest, WaitForNetworkGivesUpWithoutCniConfig) {
  ASSERT_NO_FATAL_FAILURE(StartContainerd());
  SimulatedClock clock;
  std::vector<ReadyProgress> seen;
  auto ready =
      client_->WaitUntilReady({.timeout = seconds(2),
                               .poll_interval = milliseconds(250),
                               .require_network = true,
                               .clock = &clock,
                               .on_progress = [&](const ReadyProgress& p) { seen.push_back(p); }});
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_FALSE(*ready);
  // Polls at 0, 0.25, ..., 1.5 s: the last one with kMinPollCallTimeout left to answer.
  ASSERT_EQ(seen.size(), 7u);
  EXPECT_EQ(clock.TotalSlept(), milliseconds(1500));
  ASSERT_TRUE(seen.back().status.has_value()) << seen.back().error;
  EXPECT_TRUE(seen.back().status->runtime_ready);
  EXPECT_FALSE(seen.back().status->network_ready);
  EXPECT_THAT(seen.back().Describe(), HasSubstr("network not ready (NetworkPluginNotReady"));
}

TEST_F(CriClientTest, ListImagesOfAnEmptyStore) {
  ASSERT_NO_FATAL_FAILURE(StartContainerd());
  auto images = client_->ListImages();
  ASSERT_TRUE(images.ok()) << images.status();
  EXPECT_TRUE(images->empty());
}

TEST_F(CriClientTest, PullFromARegistryThatRefusesFailsClearly) {
  ASSERT_NO_FATAL_FAILURE(StartContainerd());
  // Port 1 on loopback refuses at once; there is no internet here anyway.
  const std::string ref = "127.0.0.1:1/fun/does-not-exist:latest";
  const auto start = std::chrono::steady_clock::now();
  auto id = client_->PullImage(ref, {.timeout = seconds(60)});
  const milliseconds took = Since(start);
  ASSERT_FALSE(id.ok()) << "pulled " << *id;
  std::printf("PullImage error after %lld ms: %s\n", static_cast<long long>(took.count()),
              id.status().ToString().c_str());
  EXPECT_NE(id.status().code(), Code::kDeadlineExceeded);
  EXPECT_THAT(id.status().message(), StartsWith("CRI PullImage: "));
  EXPECT_THAT(id.status().message(), HasSubstr(ref));
  EXPECT_THAT(id.status().message(), HasSubstr("connection refused"));
  EXPECT_LT(took, seconds(30));

  // Nothing was stored; removing what is not there is fine (CRI RemoveImage is idempotent).
  auto status = client_->ImageStatus(ref);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_FALSE(status->has_value());
  EXPECT_TRUE(client_->RemoveImage(ref).ok());
  auto images = client_->ListImages();
  ASSERT_TRUE(images.ok()) << images.status();
  EXPECT_TRUE(images->empty());
}

TEST_F(CriClientTest, WaitUntilReadyWhileTheSocketAppears) {
  ContainerdFixtureOptions options;
  options.launch = false;
  auto f = ContainerdFixture::Create(options);
  ASSERT_TRUE(f.ok()) << f.status();
  ctd_ = std::move(f).value();
  auto cri = MustConnect(ctd_->socket_path());
  ASSERT_NE(cri, nullptr);

  // containerd is launched from the first progress report, which saw no socket: no sleeps,
  // and the wait has to live through "not there yet" into "ready".
  std::vector<ReadyProgress> seen;
  const auto start = std::chrono::steady_clock::now();
  auto ready = cri->WaitUntilReady({.timeout = seconds(30),
                                    .poll_interval = milliseconds(20),
                                    .on_progress = [&](const ReadyProgress& p) {
                                      seen.push_back(p);
                                      if (!ctd_->running()) {
                                        Status s = ctd_->Launch();
                                        EXPECT_TRUE(s.ok()) << s;
                                      }
                                    }});
  const milliseconds took = Since(start);
  ASSERT_TRUE(ready.ok()) << ready.status();
  ASSERT_TRUE(*ready) << (seen.empty() ? "no progress" : seen.back().Describe());
  ASSERT_GE(seen.size(), 2u);
  EXPECT_EQ(seen.front().error.code(), Code::kUnavailable) << seen.front().error;
  EXPECT_EQ(seen.front().Describe(), "containerd socket not there yet");
  EXPECT_TRUE(seen.back().ready);
  // containerd is up in ~0.1 s. gRPC left alone would notice only after its backup poller runs
  // (every 5 s): the client's fresh channel after Unavailable is what makes this quick.
  EXPECT_LT(took, seconds(4));
  std::printf("ready %lld ms after launch from the first poll (%zu polls):\n",
              static_cast<long long>(took.count()), seen.size());
  std::string last;
  for (const ReadyProgress& p : seen) {
    if (p.Describe() != last) std::printf("  poll %d: %s\n", p.attempt, p.Describe().c_str());
    last = p.Describe();
  }
}

TEST_F(CriClientTest, SameClientRecoversWhenContainerdRestarts) {
  ASSERT_NO_FATAL_FAILURE(StartContainerd());
  ASSERT_TRUE(client_->Version().ok());

  ASSERT_TRUE(ctd_->Stop().ok());
  auto down = client_->Version({.timeout = seconds(5)});
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.status().code(), Code::kUnavailable) << down.status();

  ASSERT_TRUE(ctd_->Launch().ok());
  ASSERT_TRUE(ctd_->WaitUntilUp().ok());  // socket up, CRI ready (seen by another client)
  // The client that saw containerd down answers at once, not after a reconnect backoff.
  const auto start = std::chrono::steady_clock::now();
  auto up = client_->Version({.timeout = seconds(10)});
  ASSERT_TRUE(up.ok()) << up.status();
  EXPECT_EQ(up->runtime_name, "containerd");
  EXPECT_LT(Since(start), seconds(2));
}

TEST_F(CriClientTest, ContainerdWithoutCriIsAPermanentError) {
  ContainerdFixtureOptions options;
  options.enable_cri = false;
  ASSERT_NO_FATAL_FAILURE(StartContainerd(options));

  auto v = client_->Version();
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), Code::kUnimplemented) << v.status();
  EXPECT_THAT(v.status().message(), StartsWith("CRI Version: "));
  EXPECT_THAT(v.status().message(), HasSubstr("does not serve CRI runtime.v1"));

  int polls = 0;
  auto ready = client_->WaitUntilReady(
      {.timeout = seconds(30), .on_progress = [&](const ReadyProgress&) { ++polls; }});
  ASSERT_FALSE(ready.ok());
  EXPECT_EQ(ready.status().code(), Code::kUnimplemented);
  EXPECT_THAT(ready.status().message(), StartsWith("waiting for containerd on "));
  EXPECT_EQ(polls, 1) << "polling cannot fix a missing CRI plugin";
}

}  // namespace
}  // namespace fun::cri

// Pull progress against a real containerd pulling from a real registry (RegistryFixture,
// ContainerdFixture; no mocks): an image of three layers of random bytes (so their compressed
// sizes are known only from the manifest) is built with umoci, pushed with skopeo, and pulled
// through CRI while PullProgress polls containerd's content service.
//
// containerd reaches the registry through a relay in this test that passes the registry's
// replies on in 16 KiB pieces with a short pause after each: on loopback a few MB download in a
// few ms, between two polls. The pauses make the downloads last long enough for the polls to see
// them move; nothing here asserts how long anything took.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "lib/base/accept_loop.h"
#include "lib/base/process.h"
#include "lib/base/socket.h"
#include "lib/base/status.h"
#include "lib/cri/client.h"
#include "lib/cri/pull_progress.h"
#include "lib/cri/testing/containerd_fixture.h"
#include "lib/cri/testing/registry_fixture.h"

namespace fun::cri {
namespace {

using ::fun::cri::testing::ContainerdFixture;
using ::fun::cri::testing::RegistryFixture;
using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;

// A TCP relay to `upstream` that slows the replies down (see the top of the file).
class SlowRelay {
 public:
  static std::unique_ptr<SlowRelay> Start(uint16_t upstream_port) {
    auto r = std::unique_ptr<SlowRelay>(new SlowRelay());
    r->upstream_ = SocketAddress{
        .kind = SocketAddress::Kind::kTcp, .host = "127.0.0.1", .port = upstream_port};
    SlowRelay* self = r.get();
    auto loop = AcceptLoop::Create(
        SocketAddress{.kind = SocketAddress::Kind::kTcp, .host = "127.0.0.1", .port = 0},
        [self](UniqueFd c, std::string) { self->Serve(std::move(c)); });
    if (!loop.ok()) {
      ADD_FAILURE() << loop.status();
      return nullptr;
    }
    r->loop_ = std::move(*loop);
    r->thread_ = std::thread([self] { (void)self->loop_->Run(); });
    return r;
  }
  ~SlowRelay() {
    stop_ = true;
    loop_->Stop();
    thread_.join();
    loop_.reset();  // joins the connection threads, which see stop_ within 50 ms
  }
  // "127.0.0.1:PORT"
  std::string host() const {
    const std::string& a = loop_->address();  // "tcp:127.0.0.1:PORT"
    return a.substr(a.find(':') + 1);
  }

 private:
  SlowRelay() = default;

  void Serve(UniqueFd client) {
    auto up = Connect(upstream_);
    if (!up.ok()) return;
    char buf[16 * 1024];
    bool client_open = true;
    while (!stop_) {
      pollfd p[2] = {{.fd = client.get(),
                      .events = static_cast<short>(client_open ? POLLIN : 0),
                      .revents = 0},
                     {.fd = up->get(), .events = POLLIN, .revents = 0}};
      int n = ::poll(p, 2, 50);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return;
      if (p[0].revents != 0) {
        ssize_t got = ::read(client.get(), buf, sizeof(buf));
        if (got <= 0) {
          client_open = false;
          ::shutdown(up->get(), SHUT_WR);
        } else if (!WriteAll(up->get(), std::string_view(buf, static_cast<size_t>(got))).ok()) {
          return;
        }
      }
      if (p[1].revents != 0) {
        ssize_t got = ::read(up->get(), buf, sizeof(buf));
        if (got <= 0) return;
        if (!WriteAll(client.get(), std::string_view(buf, static_cast<size_t>(got))).ok()) return;
        std::this_thread::sleep_for(milliseconds(4));  // ~4 MB/s per connection at most
      }
    }
  }

  SocketAddress upstream_;
  std::atomic<bool> stop_{false};
  std::unique_ptr<AcceptLoop> loop_;
  std::thread thread_;
};

Status RunOk(const std::string& program, std::vector<std::string> args) {
  Command cmd{.program = program, .args = std::move(args)};
  cmd.timeout = seconds(120);
  FUN_ASSIGN_OR_RETURN(ProcessResult r, ProcessRunner::Default().Run(cmd));
  return CheckExit(cmd, r);
}

StatusOr<std::string> RunOutput(const std::string& program, std::vector<std::string> args) {
  Command cmd{.program = program, .args = std::move(args)};
  cmd.timeout = seconds(60);
  FUN_ASSIGN_OR_RETURN(ProcessResult r, ProcessRunner::Default().Run(cmd));
  FUN_RETURN_IF_ERROR(CheckExit(cmd, r));
  return r.stdout_data;
}

Status WriteRandomFile(const std::string& path, size_t bytes) {
  std::ifstream in("/dev/urandom", std::ios::binary);
  std::string data(bytes, '\0');
  in.read(data.data(), static_cast<std::streamsize>(bytes));
  std::ofstream out(path, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(bytes));
  if (!in || !out) return InternalError("writing " + path);
  return OkStatus();
}

class PullProgressRegistryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!ContentServiceCompiledIn()) {
      skip_ = "this build has no containerd content service protos (see configure's output)";
      return;
    }
    for (Status why : {ContainerdFixture::CanRun(), RegistryFixture::CanRun()}) {
      if (!why.ok()) {
        skip_ = why.message();
        return;
      }
    }
    for (const char* tool : {"umoci", "skopeo"}) {
      if (!FindProgram(tool, std::getenv("PATH") ? std::getenv("PATH") : "").ok()) {
        skip_ = std::string(tool) + " not found (run ci/setup.sh)";
        return;
      }
    }
    auto reg = RegistryFixture::Create();
    ASSERT_TRUE(reg.ok()) << reg.status();
    registry_ = std::move(*reg).release();
    relay_ = SlowRelay::Start(registry_->port()).release();
    ASSERT_NE(relay_, nullptr);
    ContainerdFixture::Options o;
    o.plain_http_registries = {registry_->host(), relay_->host()};
    o.sandbox_image = registry_->pause_ref();
    auto ctd = ContainerdFixture::Create(o);
    ASSERT_TRUE(ctd.ok()) << ctd.status();
    containerd_ = std::move(*ctd).release();
  }
  static void TearDownTestSuite() {
    delete containerd_;
    containerd_ = nullptr;
    delete relay_;
    relay_ = nullptr;
    delete registry_;
    registry_ = nullptr;
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_NE(containerd_, nullptr);
    cri_ = CriClient::Connect(containerd_->socket_path()).value();
  }

  // Builds an image of one layer per entry of `sizes` (that many random bytes each) with umoci,
  // pushes it to the registry as fun/<name>:test, and returns the compressed layer sizes the
  // registry's manifest lists.
  static StatusOr<std::vector<uint64_t>> PushLayeredImage(const std::string& name,
                                                          const std::vector<size_t>& sizes) {
    char tmpl[] = "/tmp/fun-layers.XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return ErrnoError(errno, "mkdtemp");
    const std::string dir = tmpl;
    struct Cleanup {
      std::string d;
      ~Cleanup() {
        std::error_code ec;
        std::filesystem::remove_all(d, ec);
      }
    } cleanup{dir};
    const std::string image = dir + "/oci:test";
    FUN_RETURN_IF_ERROR(RunOk("umoci", {"init", "--layout", dir + "/oci"}));
    FUN_RETURN_IF_ERROR(RunOk("umoci", {"new", "--image", image}));
    std::vector<std::string> rootless;
    if (::geteuid() != 0) rootless.push_back("--rootless");
    for (size_t i = 0; i < sizes.size(); ++i) {
      const std::string file = dir + "/data" + std::to_string(i);
      FUN_RETURN_IF_ERROR(WriteRandomFile(file, sizes[i]));
      std::vector<std::string> args = {"insert"};
      args.insert(args.end(), rootless.begin(), rootless.end());
      args.insert(args.end(), {"--image", image, file, "/data/layer" + std::to_string(i)});
      FUN_RETURN_IF_ERROR(RunOk("umoci", args));
    }
    FUN_RETURN_IF_ERROR(RunOk("umoci", {"config", "--image", image, "--os", "linux",
                                        "--architecture", "amd64", "--config.cmd", "true"}));
    const std::string dest = "docker://" + registry_->host() + "/fun/" + name + ":test";
    FUN_RETURN_IF_ERROR(RunOk("skopeo", {"copy", "--quiet", "--insecure-policy",
                                         "--dest-tls-verify=false", "oci:" + image, dest}));
    FUN_ASSIGN_OR_RETURN(std::string raw,
                         RunOutput("skopeo", {"inspect", "--raw", "--tls-verify=false", dest}));
    std::vector<uint64_t> layer_sizes;
    nlohmann::json manifest = nlohmann::json::parse(raw, nullptr, /*allow_exceptions=*/false);
    if (!manifest.is_object() || !manifest["layers"].is_array()) {
      return DataLossError("the registry's manifest has no layers: " + raw);
    }
    for (const auto& l : manifest["layers"]) layer_sizes.push_back(l["size"].get<uint64_t>());
    return layer_sizes;
  }

  // The ref of fun/<name>:test through the slow relay.
  static std::string SlowRef(const std::string& name) {
    return relay_->host() + "/fun/" + name + ":test";
  }

  static inline std::string skip_;
  static inline RegistryFixture* registry_ = nullptr;
  static inline SlowRelay* relay_ = nullptr;
  static inline ContainerdFixture* containerd_ = nullptr;
  std::unique_ptr<CriClient> cri_;
};

uint64_t Sum(const std::vector<uint64_t>& v) {
  uint64_t s = 0;
  for (uint64_t x : v) s += x;
  return s;
}

TEST_F(PullProgressRegistryTest, SnapshotsGrowToTheManifestsLayerSizes) {
  auto sizes = PushLayeredImage("layers", {600 * 1024, 1500 * 1024, 2600 * 1024});
  ASSERT_TRUE(sizes.ok()) << sizes.status();
  ASSERT_EQ(sizes->size(), 3u);
  const uint64_t total = Sum(*sizes);

  const std::string ref = SlowRef("layers");
  std::ostringstream out;
  std::mutex mu;
  std::vector<PullSnapshot> seen;
  PullProgress progress(containerd_->socket_path(), ref, out, /*terminal=*/false,
                        {.interval = milliseconds(20), .on_snapshot = [&](const PullSnapshot& s) {
                           std::lock_guard<std::mutex> lock(mu);
                           seen.push_back(s);
                         }});
  auto id = cri_->PullImage(ref, {.timeout = seconds(180)});
  PullSnapshot last = progress.Finish("pulled");
  ASSERT_TRUE(id.ok()) << id.status() << "\n" << containerd_->LogTail();

  EXPECT_TRUE(progress.content_service());
  EXPECT_EQ(last.layers_seen, 3);
  EXPECT_EQ(last.layers_done, 3);
  EXPECT_EQ(last.bytes_total, total);
  EXPECT_EQ(last.bytes_done, total);

  std::lock_guard<std::mutex> lock(mu);
  ASSERT_FALSE(seen.empty());
  uint64_t distinct_midway = 0, previous = 0;
  for (const PullSnapshot& s : seen) {
    EXPECT_GE(s.bytes_done, previous) << "bytes went backwards";
    EXPECT_LE(s.bytes_done, s.bytes_total);
    if (s.bytes_done > previous && s.bytes_done < total) ++distinct_midway;
    previous = s.bytes_done;
  }
  EXPECT_GE(distinct_midway, 2u) << "expected the bytes to be seen growing during the download";
  std::printf(
      "%zu snapshots, %llu with growing bytes below the total; layers %llu+%llu+%llu = "
      "%llu bytes\n",
      seen.size(), static_cast<unsigned long long>(distinct_midway),
      static_cast<unsigned long long>((*sizes)[0]), static_cast<unsigned long long>((*sizes)[1]),
      static_cast<unsigned long long>((*sizes)[2]), static_cast<unsigned long long>(total));

  const std::string text = out.str();
  EXPECT_THAT(text, HasSubstr("pulling " + ref + ": 3/3 layers, " + HumanBytes(total) + "/" +
                              HumanBytes(total)));
  EXPECT_THAT(text, HasSubstr("\npulled\n"));
  std::printf("%s", text.c_str());
}

TEST_F(PullProgressRegistryTest, TerminalBarShowsLayersAndIsClearedAtTheEnd) {
  auto sizes = PushLayeredImage("bar", {600 * 1024, 900 * 1024});
  ASSERT_TRUE(sizes.ok()) << sizes.status();
  const std::string ref = SlowRef("bar");
  std::ostringstream out;
  PullProgress progress(containerd_->socket_path(), ref, out, /*terminal=*/true,
                        {.interval = milliseconds(20), .width = 120});
  auto id = cri_->PullImage(ref, {.timeout = seconds(180)});
  PullSnapshot last = progress.Finish("");
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(last.layers_done, 2);
  EXPECT_EQ(last.bytes_done, Sum(*sizes));
  const std::string text = out.str();
  // Redrawn in place: carriage returns, no newlines; a bar with the layer count at some point.
  EXPECT_EQ(text.find('\n'), std::string::npos);
  EXPECT_THAT(text, HasSubstr(" pulling " + ref + " ["));
  EXPECT_THAT(text, HasSubstr("/2 layers"));
  EXPECT_EQ(text.back(), '\r');
}

TEST_F(PullProgressRegistryTest, AnImageAlreadyStoredDownloadsNothing) {
  auto sizes = PushLayeredImage("again", {100 * 1024});
  ASSERT_TRUE(sizes.ok()) << sizes.status();
  const std::string ref = SlowRef("again");
  ASSERT_TRUE(cri_->PullImage(ref, {.timeout = seconds(180)}).ok());
  std::ostringstream out;
  PullProgress progress(containerd_->socket_path(), ref, out, /*terminal=*/false,
                        {.interval = milliseconds(20)});
  ASSERT_TRUE(cri_->PullImage(ref, {.timeout = seconds(180)}).ok());
  PullSnapshot last = progress.Finish("");
  EXPECT_TRUE(last.from_content);
  EXPECT_EQ(last.layers_seen, 0);
  EXPECT_EQ(out.str().find("layers"), std::string::npos) << out.str();
}

TEST_F(PullProgressRegistryTest, AnEndpointThatDoesNotAnswerIsASpinner) {
  // (An endpoint that answers Unimplemented is pull_progress_test.cc's.)
  std::ostringstream out;
  PullProgress progress(containerd_->dir() + "/nobody.sock", "img", out, /*terminal=*/false,
                        {.interval = milliseconds(20)});
  PullSnapshot last = progress.Finish("done");
  EXPECT_FALSE(last.from_content);
  EXPECT_EQ(out.str().substr(0, 13), "pulling img (");
  EXPECT_THAT(out.str(), HasSubstr("\ndone\n"));
}

}  // namespace
}  // namespace fun::cri

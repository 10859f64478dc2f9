// registry_fixture.h: a real image registry for tests (no mocks): Debian's docker-registry on
// a free loopback port, its storage in a temp dir of its own, seeded with the images that
// images/build.sh built (fun/busybox:latest, fun/pause:1.0).
//
// Create() makes a short temp dir (/tmp/fun-reg.XXXXXX), picks a free port on 127.0.0.1,
// starts `images/registry.sh run` (which writes the registry's config and execs
// docker-registry: the child is the registry) with its log in the temp dir, waits until
// http://127.0.0.1:PORT/v2/ answers, then pushes the images with `images/registry.sh push`
// (skopeo). The destructor stops the registry (SIGTERM, then SIGKILL) and removes the temp dir.
// A test process that died without its destructor leaves a registry running: the next
// Create() in the same parent dir finds such dirs (their owner.pid is dead), kills the
// registry that serves from there and removes them.
//
// The images come from FUN_IMAGES_DIR (a compile definition: <build>/images, made by the CMake
// target fun_images, which tests using this fixture depend on).
//
//   if (fun::Status why = RegistryFixture::CanRun(); !why.ok()) GTEST_SKIP() << why;
//   auto reg = RegistryFixture::Create();
//   ASSERT_TRUE(reg.ok()) << reg.status();
//   ContainerdFixtureOptions o;
//   o.plain_http_registries = {(*reg)->host()};       // "127.0.0.1:PORT"
//   o.sandbox_image = (*reg)->pause_ref();
//   ... cri->PullImage((*reg)->busybox_ref()) ...     // "127.0.0.1:PORT/fun/busybox:latest"
//
// Thread-safety: not thread-safe; one test thread drives a fixture. Ref() and the accessors
// may be called from any thread once Create() returned.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "lib/base/process.h"
#include "lib/base/status.h"

namespace fun::cri::testing {

// The repositories images/build.sh makes and images/registry.sh pushes (images.txt says the
// same; a test checks that they agree).
inline constexpr std::string_view kBusyboxRepo = "fun/busybox:latest";
inline constexpr std::string_view kPauseRepo = "fun/pause:1.0";

struct RegistryFixtureOptions {
  // The images/build.sh output to push; "": FUN_IMAGES_DIR.
  std::string images_dir{};
  // images/registry.sh; "": FUN_REGISTRY_SCRIPT (the one in this source tree).
  std::string registry_script{};
  // Where the temp dir is made. "": $TMPDIR, else /tmp.
  std::string parent_dir{};
  // Push the images once the registry answers. false: an empty registry.
  bool seed = true;
  // Give up waiting for /v2/ after this long.
  std::chrono::milliseconds start_timeout{std::chrono::seconds(20)};
  // How long pushing every image may take.
  std::chrono::milliseconds push_timeout{std::chrono::seconds(60)};
  // How long the registry may take to exit after SIGTERM before SIGKILL.
  std::chrono::milliseconds stop_grace{std::chrono::seconds(5)};
};

// A reply of RegistryFixture::Get.
struct HttpReply {
  int status = 0;  // 200, 404, ...
  std::string body;
};

class RegistryFixture {
 public:
  using Options = RegistryFixtureOptions;

  // OK if a fixture can run here; otherwise FailedPrecondition naming what is missing
  // (docker-registry, skopeo, the script, the built images and how to build them).
  static Status CanRun(const Options& options = {});

  // Starts the registry and (with options.seed) pushes the images. On a failure the error
  // carries the tail of the registry's log.
  static StatusOr<std::unique_ptr<RegistryFixture>> Create(Options options = {});

  ~RegistryFixture();
  RegistryFixture(const RegistryFixture&) = delete;
  RegistryFixture& operator=(const RegistryFixture&) = delete;

  // Stops the registry (SIGTERM, SIGKILL after stop_grace). OK if it was not running. The temp
  // dir stays until the destructor.
  Status Stop();
  bool running() const { return process_ != nullptr; }

  // A GET of http://127.0.0.1:PORT<path> (path starts with '/'), e.g. "/v2/_catalog". The body
  // is bounded (1 MiB); a reply without a status line is DataLoss.
  StatusOr<HttpReply> Get(std::string_view path) const;

  // The last `max_lines` lines of the registry's log (for failure messages).
  std::string LogTail(size_t max_lines = 30) const;

  uint16_t port() const { return port_; }
  // "127.0.0.1:PORT": the registry host as image references and hosts.toml name it.
  std::string host() const;
  // host() + "/" + repo_tag: Ref("fun/busybox:latest") = "127.0.0.1:PORT/fun/busybox:latest".
  std::string Ref(std::string_view repo_tag) const;
  std::string busybox_ref() const { return Ref(kBusyboxRepo); }
  std::string pause_ref() const { return Ref(kPauseRepo); }
  const std::string& dir() const { return dir_; }
  const std::string& log_path() const { return log_path_; }
  const std::string& images_dir() const { return options_.images_dir; }
  // From starting the registry to /v2/ answering, and the time the push took.
  std::chrono::milliseconds up_after() const { return up_after_; }
  std::chrono::milliseconds seeded_in() const { return seeded_in_; }

 private:
  explicit RegistryFixture(Options options) : options_(std::move(options)) {}
  Status Prepare();
  // Starts the registry on a fresh free port and waits for /v2/; on a failure, sets
  // *port_taken when the port was taken meanwhile (the caller retries with another).
  Status Launch(bool* port_taken);
  Status Seed();
  void Cleanup();

  Options options_;
  std::string dir_;
  std::string log_path_;
  uint16_t port_ = 0;
  std::unique_ptr<Process> process_;
  std::chrono::milliseconds up_after_{0};
  std::chrono::milliseconds seeded_in_{0};
};

}  // namespace fun::cri::testing

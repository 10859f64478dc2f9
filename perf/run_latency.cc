// run_latency: how long `fun run --rm IMAGE true` takes, side by side with containerd's own
// `ctr run --rm` of the same image on the same containerd, as a median of N runs and a ratio
// (CRI adds a pod sandbox per container, ctr does not). Optionally the same fun run through a
// VM instance under the current accelerator, reported beside them.
//
//   build/perf/run_latency [--runs 20] [--vm] [--fun build/bin/fun] [--show-calls]
//
// The native side starts its own containerd and registry (the test fixtures: real
// /usr/bin/containerd and docker-registry in temp dirs; needs root). --vm uses the instance
// "default" of a temp FUN_HOME with the registry on 127.0.0.1:5000 (port must be free).
// The native containerd's pods use the VM's own CNI network (bridge; no per-pod ipMasq chains
// and no portmap, which cost ~80 ms more per run in StopPodSandbox's teardown): what a fun run
// costs in Fun's VM, minus the VM.
// Prints one table; never a pass/fail threshold.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "lib/base/flags.h"
#include "lib/base/process.h"
#include "lib/cri/client.h"
#include "lib/cri/testing/containerd_fixture.h"
#include "lib/cri/testing/registry_fixture.h"
#include "lib/vm/image.h"

namespace {

using fun::Command;
using fun::ProcessRunner;

struct Series {
  std::string name;
  std::vector<double> seconds;
  double Median() const {
    std::vector<double> s = seconds;
    std::sort(s.begin(), s.end());
    if (s.empty()) return 0;
    return s.size() % 2 == 1 ? s[s.size() / 2] : (s[s.size() / 2 - 1] + s[s.size() / 2]) / 2;
  }
  double Min() const {
    return seconds.empty() ? 0 : *std::min_element(seconds.begin(), seconds.end());
  }
  double Max() const {
    return seconds.empty() ? 0 : *std::max_element(seconds.begin(), seconds.end());
  }
};

// Runs `cmd` `runs` times; each must exit 0.
fun::StatusOr<Series> Time(const std::string& name, const Command& cmd, int runs) {
  Series s{.name = name};
  for (int i = 0; i < runs; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto r = ProcessRunner::Default().Run(cmd);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!r.ok()) return r.status();
    if (!r->ok()) {
      return fun::InternalError(
          fmt::format("{}: {} {}{}", name, r->Describe(), r->stdout_data, r->stderr_data));
    }
    s.seconds.push_back(secs);
  }
  return s;
}

void Print(const Series& s, const Series* base) {
  std::printf("%-44s %8.3f %8.3f %8.3f %7zu", s.name.c_str(), s.Median(), s.Min(), s.Max(),
              s.seconds.size());
  if (base != nullptr && base->Median() > 0) std::printf("   %5.2fx", s.Median() / base->Median());
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 20;
  bool vm = false;
  std::string fun_bin = fun::vm::ExecutableDir() + "/../bin/fun";
  fun::FlagSet flags("run_latency");
  flags.Int("runs", &runs, "runs per series (median reported)");
  flags.Bool("vm", &vm, "also time fun run through a VM instance");
  flags.String("fun", &fun_bin, "the fun binary");
  bool show_calls = false;
  flags.Bool("show-calls", &show_calls, "print one fun run's CRI calls with their durations");
  auto rest = flags.Parse(std::vector<std::string>(argv + 1, argv + argc));
  if (!rest.ok() || !rest->empty() || runs < 1) {
    std::fprintf(stderr, "usage: run_latency [--runs N] [--vm] [--fun PATH]\n");
    return 2;
  }
  if (fun::Status why = fun::cri::testing::ContainerdFixture::CanRun(); !why.ok()) {
    std::fprintf(stderr, "run_latency: %s\n", why.message().c_str());
    return 1;
  }
  auto reg = fun::cri::testing::RegistryFixture::Create();
  if (!reg.ok()) {
    std::fprintf(stderr, "run_latency: registry: %s\n", reg.status().message().c_str());
    return 1;
  }
  fun::cri::testing::ContainerdFixture::Options o;
  o.plain_http_registries = {(*reg)->host()};
  o.sandbox_image = (*reg)->pause_ref();
  auto ctd = fun::cri::testing::ContainerdFixture::Create(o);
  if (!ctd.ok()) {
    std::fprintf(stderr, "run_latency: containerd: %s\n", ctd.status().message().c_str());
    return 1;
  }
  if (auto cni = (*ctd)->WriteCniConfig({.as_in_vm = true}); !cni.ok()) {
    std::fprintf(stderr, "run_latency: CNI: %s\n", cni.status().message().c_str());
    return 1;
  }
  const std::string image = (*reg)->busybox_ref();
  const std::string sock = (*ctd)->socket_path();
  auto cri = fun::cri::CriClient::Connect(sock);
  if (!cri.ok() || !(*cri)->WaitUntilReady({.require_network = true}).value_or(false) ||
      !(*cri)->PullImage(image).ok()) {
    std::fprintf(stderr, "run_latency: containerd did not get ready or pull %s\n", image.c_str());
    return 1;
  }
  // Both pod sandboxes and ctr need the pause/busybox images present: warm up once each.
  Command fun_run{.program = fun_bin,
                  .args = {"--host", "unix:" + sock, "--log-root", (*ctd)->dir() + "/logs", "run",
                           "--rm", image, "true"}};
  Command ctr_run{.program = "/usr/bin/ctr",
                  .args = {"--address", sock, "--namespace", "k8s.io", "run", "--rm",
                           "--snapshotter", (*ctd)->snapshotter(), image, "", "true"}};
  fun_run.timeout = ctr_run.timeout = std::chrono::seconds(120);
  std::vector<Series> all;
  int id = 0;
  auto ctr_with_id = [&]() {
    Command c = ctr_run;
    c.args[9] = fmt::format("run-latency-{}-{}", ::getpid(), id++);
    return c;
  };
  if (auto w = Time("warm-up", fun_run, 1); !w.ok()) {
    std::fprintf(stderr, "run_latency: %s\n", w.status().message().c_str());
    return 1;
  }
  if (show_calls) {
    Command traced = fun_run;
    traced.args.insert(traced.args.begin(), "--debug");
    auto r = ProcessRunner::Default().Run(traced);
    if (r.ok()) std::printf("one traced fun run:\n%s\n", r->stderr_data.c_str());
  }
  // ctr needs a fresh container id per run: time it run by run.
  Series ctr{.name = "ctr run --rm (containerd, no pod)"};
  for (int i = 0; i < runs; ++i) {
    auto one = Time("ctr", ctr_with_id(), 1);
    if (!one.ok()) {
      std::fprintf(stderr, "run_latency: %s\n", one.status().message().c_str());
      return 1;
    }
    ctr.seconds.push_back(one->seconds[0]);
  }
  auto fun_native = Time("fun run --rm (native, CRI pod, VM's CNI)", fun_run, runs);
  if (!fun_native.ok()) {
    std::fprintf(stderr, "run_latency: %s\n", fun_native.status().message().c_str());
    return 1;
  }
  // ctr's container gets an empty network namespace, no CNI: the host-network pod shows what
  // the pod sandbox costs without CNI's bridge setup and teardown.
  Command fun_host = fun_run;
  fun_host.args.insert(fun_host.args.end() - 2, {"--network", "host"});
  auto fun_host_net = Time("fun run --rm --network host (no CNI)", fun_host, runs);
  if (!fun_host_net.ok()) {
    std::fprintf(stderr, "run_latency: %s\n", fun_host_net.status().message().c_str());
    return 1;
  }

  std::printf("run latency of `true` in %s, %d runs each (seconds)\n", image.c_str(), runs);
  std::printf("%-44s %8s %8s %8s %7s   %s\n", "", "median", "min", "max", "runs", "vs ctr");
  Print(ctr, nullptr);
  Print(*fun_native, &ctr);
  Print(*fun_host_net, &ctr);

  if (vm) {
    char tmpl[] = "/tmp/fun-run-latency-XXXXXX";
    std::string home = ::mkdtemp(tmpl);
    Command start_registry{.program = std::string(FUN_REGISTRY_SCRIPT),
                           .args = {"start", "--dir", home + "/registry", "--port", "5000",
                                    "--images", FUN_IMAGES_DIR}};
    start_registry.timeout = std::chrono::seconds(60);
    auto sr = ProcessRunner::Default().Run(start_registry);
    if (!sr.ok() || !sr->ok()) {
      std::fprintf(stderr, "run_latency: the registry on 127.0.0.1:5000 did not start\n");
      return 1;
    }
    Command vm_run{.program = fun_bin,
                   .args = {"run", "--rm", "10.0.2.2:5000/fun/busybox:latest", "true"}};
    vm_run.env_overrides["FUN_HOME"] = home;
    vm_run.timeout = std::chrono::seconds(300);
    auto boot = Time("first fun run (boots the VM, pulls)", vm_run, 1);
    fun::Status vm_status = boot.status();
    if (boot.ok()) {
      auto warm = Time("fun run --rm through the VM", vm_run, std::min(runs, 10));
      if (warm.ok()) {
        Print(*boot, &ctr);
        Print(*warm, &ctr);
      } else {
        vm_status = warm.status();
      }
    }
    Command stop{.program = fun::vm::ExecutableDir() + "/../bin/fun-vmctl", .args = {"stop"}};
    stop.env_overrides["FUN_HOME"] = home;
    stop.timeout = std::chrono::seconds(60);
    (void)ProcessRunner::Default().Run(stop);
    Command stop_registry{.program = std::string(FUN_REGISTRY_SCRIPT),
                          .args = {"stop", "--dir", home + "/registry"}};
    (void)ProcessRunner::Default().Run(stop_registry);
    std::system(("rm -rf '" + home + "'").c_str());  // NOLINT
    if (!vm_status.ok()) {
      std::fprintf(stderr, "run_latency: VM: %s\n", vm_status.message().c_str());
      return 1;
    }
  }
  return 0;
}

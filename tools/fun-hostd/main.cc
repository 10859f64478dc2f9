// fun-hostd: the long-lived host process of one instance (lib/vm/hostd.h). fun-vmctl starts
// it; people do not need to. SIGTERM or SIGINT stops the VM gracefully; a second one forces.
//
//   fun-hostd --instance NAME [--image-dir DIR] [--qemu PATH] [--machine q35|pc|microvm]
//             [--stop-timeout S] [--log-level LEVEL]
//
// $FUN_QEMU_EXTRA_ARGS (for measurements and debugging): arguments appended to QEMU's command
// line, split on spaces (no quoting), logged in hostd.log. fun-vmctl passes its environment on:
//   FUN_QEMU_EXTRA_ARGS="-virtfs local,path=/tmp/d,mount_tag=t,security_model=none" fun-vmctl start
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "lib/base/files.h"
#include "lib/base/flags.h"
#include "lib/base/log.h"
#include "lib/vm/hostd.h"
#include "lib/vm/image.h"
#include "lib/vm/qemu_command.h"

int main(int argc, char** argv) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);  // log the shares' counters
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGHUP, SIG_IGN);  // the terminal that started us may go away
  // Two fds per forwarded connection (client and agent channel); macOS starts at 256.
  if (auto limit = fun::RaiseOpenFileLimit(); !limit.ok()) {
    std::cerr << "fun-hostd: warning: " << limit.status().message() << "\n";
  }

  std::string instance = "default", image_dir, qemu, hyperkit, machine = "q35";
  std::string level = "info";
  int stop_timeout = 30;
  fun::FlagSet flags("fun-hostd");
  flags.String("instance", &instance, "the instance to run");
  flags.String("image-dir", &image_dir, "directory with fun-kernel, fun-initrd.img, fun-cmdline");
  flags.String("qemu", &qemu, "the QEMU binary (default: as fun-doctor's FUN0001 finds it)");
  flags.String("hyperkit", &hyperkit,
               "the hyperkit binary, backend hyperkit (default: as FUN0001 finds it)");
  flags.String("machine", &machine, "QEMU machine type: q35, pc or microvm");
  flags.Int("stop-timeout", &stop_timeout, "seconds a graceful stop may take");
  flags.String("log-level", &level, "debug, info, warning, error");
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::cout << "usage: fun-hostd --instance NAME [flags]\n"
              << "SIGTERM or SIGINT stops the VM (a second one forces it); SIGUSR1 logs the "
                 "shares' counters to hostd.log.\n"
              << flags.Usage();
    return 0;
  }
  auto rest = flags.Parse(args);
  if (!rest.ok() || !rest->empty()) {
    std::cerr << "fun-hostd: "
              << (rest.ok() ? "unexpected argument " + (*rest)[0] : rest.status().message())
              << "\n";
    return 2;
  }
  auto lvl = fun::log::ParseLevel(level);
  auto paths = fun::ResolvePaths(fun::PathsInputFromEnvironment());
  if (!lvl.ok() || !paths.ok()) {
    std::cerr << "fun-hostd: " << (lvl.ok() ? paths.status() : lvl.status()).message() << "\n";
    return 2;
  }
  fun::log::Logger& log = fun::log::Default();
  log.SetStderrFormat(fun::log::StderrFormat::kFull);
  log.SetStderrLevel(fun::log::Level::kWarning);
  const std::string log_path = paths->InstanceFile(instance, fun::InstanceFileKind::kHostdLog);
  fun::Status opened = log.OpenFile(log_path, *lvl);
  if (!opened.ok()) {
    std::cerr << "fun-hostd: " << opened.message() << "\n";
    return 1;
  }
  // Started by fun-vmctl, stderr is hostd.log itself (for what bypasses the logger: a crash's
  // last words): the logger's copy of each warning there would print it twice.
  struct stat err_st {
  }, log_st{};
  if (::fstat(2, &err_st) == 0 && ::stat(log_path.c_str(), &log_st) == 0 &&
      err_st.st_dev == log_st.st_dev && err_st.st_ino == log_st.st_ino) {
    log.SetStderrLevel(fun::log::Level::kOff);
  }
  auto dir = fun::vm::FindImageDir(*paths, image_dir);
  if (!dir.ok()) {
    FUN_LOG(Error, "{}", dir.status().message());
    return 1;
  }
  // The hypervisor where fun-doctor (FUN0001) looks for it: bundled next to the tools first.
  const fun::vm::HostFacts facts = fun::vm::ProbeHostFacts();
  auto pick = [&](fun::Backend backend) {
    return fun::vm::ChooseHypervisor(
        fun::vm::HypervisorCandidates(facts.os, facts.arch, backend, fun::vm::ExecutableDir()));
  };
  if (qemu.empty()) qemu = pick(fun::Backend::kQemu);
  if (hyperkit.empty()) hyperkit = pick(fun::Backend::kHyperkit);
  if (hyperkit.empty()) hyperkit = "hyperkit";  // not on this OS: the start says so
  const char* extra = std::getenv(fun::vm::kQemuExtraArgsEnv);
  auto hostd = fun::vm::Hostd::Create(
      {.instance = instance,
       .paths = *paths,
       .image_dir = *dir,
       .qemu_binary = qemu,
       .hyperkit_binary = hyperkit,
       .machine = machine,
       .qemu_extra_args = fun::vm::SplitQemuExtraArgs(extra != nullptr ? extra : ""),
       .stop_timeout = std::chrono::seconds(stop_timeout)});
  if (!hostd.ok()) {
    FUN_LOG(Error, "{}", hostd.status().message());
    return 2;
  }
  std::thread([set, h = hostd->get()] {
    for (int n = 0;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) return;
      if (sig == SIGUSR1) {
        h->LogShareStats("on SIGUSR1");
        continue;
      }
      ++n;
      FUN_LOG(Info, "signal {}: {}", sig, n == 1 ? "stopping" : "forcing the stop");
      h->RequestStop(n > 1);
    }
  }).detach();
  FUN_LOG(Info, "fun-hostd for instance {} (image {})", instance, *dir);
  fun::Status s = (*hostd)->Run();
  if (!s.ok()) {
    FUN_LOG(Error, "{}", s.message());
    return s.code() == fun::Code::kAlreadyExists ? fun::vm::kHostdExitAlreadyRunning : 1;
  }
  return 0;
}

// harness.h: boots real VMs headless and runs scenarios against them, the way a person would:
// the real fun-vmctl and fun-doctor binaries in a private FUN_HOME, and CRI calls through the
// instance's containerd.sock. Each step is timed; a failing step gets the console and hostd
// log tails attached. Reports: JUnit XML (for CI dashboards) and JSON.
//
//   HarnessOptions o{.bin_dir = "build/bin", .report_dir = "build/harness"};
//   ScenarioReport r = RunVmLifecycle(o);
//   WriteJUnit(r, o.report_dir + "/vm_lifecycle.xml");
//
// Thread-safety: one scenario at a time per FUN_HOME.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lib/base/status.h"

namespace fun::harness {

struct HarnessOptions {
  std::string bin_dir;     // where fun-vmctl, fun-hostd, fun-doctor live
  std::string image_dir;   // the VM image (empty: fun-vmctl finds it)
  std::string report_dir;  // JUnit XML and JSON go here
  std::string fun_home;    // empty: a fresh temp dir, removed afterwards unless keep
  bool keep = false;
  int boot_timeout_s = 240;
  // The local registry the VM pulls from (10.0.2.2:5000 in the VM = 127.0.0.1:5000 here):
  // images/registry.sh and the images/build.sh output it serves. Empty: no container steps.
  std::string registry_script;
  std::string images_dir;
};

struct StepResult {
  std::string name;
  bool ok = false;
  double seconds = 0;
  std::string message;              // why it failed, or what it measured
  std::vector<std::string> output;  // command lines and their output, for the report
  std::string attachments;          // console and hostd log tails, on failure
};

struct ScenarioReport {
  std::string name;
  std::vector<StepResult> steps;
  double seconds = 0;
  bool ok() const;
  nlohmann::json ToJson() const;
};

// start, CRI Version and Status, containers with `fun` (foreground output and exit code, a
// detached container's exec, logs and rm; images from the local registry), status --json,
// stop, start again on the same disk, kill -9 the hypervisor, status reports the death,
// fun-doctor names it, start again, stop.
ScenarioReport RunVmLifecycle(const HarnessOptions& options);

std::string ToJUnitXml(const ScenarioReport& r);
Status WriteReports(const ScenarioReport& r, const std::string& dir);

}  // namespace fun::harness

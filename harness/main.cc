// fun-harness: boots a real VM headless and runs a scenario against it (see harness.h).
//
//   fun-harness [--scenario vm_lifecycle] [--report-dir DIR] [--image-dir DIR]
//               [--boot-timeout S] [--keep] [--registry-script PATH] [--images-dir DIR]
//
// Exit 0 when every step passed, 1 otherwise, 2 on bad usage. Reports: DIR/<scenario>.xml
// (JUnit) and DIR/<scenario>.json.
#include <iostream>

#include "harness/harness.h"
#include "lib/base/flags.h"
#include "lib/vm/image.h"

int main(int argc, char** argv) {
  std::string scenario = "vm_lifecycle", report_dir = "harness-report", image_dir;
  int boot_timeout = 240;
  bool keep = false;
  std::string registry_script = FUN_REGISTRY_SCRIPT, images_dir = FUN_IMAGES_DIR;
  fun::FlagSet flags("fun-harness");
  flags.String("registry-script", &registry_script,
               "images/registry.sh, to serve the container images (\"\": no container steps)");
  flags.String("images-dir", &images_dir, "the images/build.sh output to serve");
  flags.String("scenario", &scenario, "vm_lifecycle");
  flags.String("report-dir", &report_dir, "where the JUnit XML and JSON reports go");
  flags.String("image-dir", &image_dir, "the VM image (default: found like fun-vmctl does)");
  flags.Int("boot-timeout", &boot_timeout, "seconds a boot may take");
  flags.Bool("keep", &keep, "keep the temporary FUN_HOME for inspection");
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::cout << "usage: fun-harness [flags]\n" << flags.Usage();
    return 0;
  }
  auto rest = flags.Parse(args);
  if (!rest.ok() || !rest->empty()) {
    std::cerr << "fun-harness: "
              << (rest.ok() ? "unexpected argument " + (*rest)[0] : rest.status().message())
              << "\n";
    return 2;
  }
  if (scenario != "vm_lifecycle") {
    std::cerr << "fun-harness: unknown scenario \"" << scenario << "\" (known: vm_lifecycle)\n";
    return 2;
  }
  fun::harness::HarnessOptions o{.bin_dir = fun::vm::ExecutableDir(),
                                 .image_dir = image_dir,
                                 .report_dir = report_dir,
                                 .keep = keep,
                                 .boot_timeout_s = boot_timeout,
                                 .registry_script = registry_script,
                                 .images_dir = images_dir};
  fun::harness::ScenarioReport r = fun::harness::RunVmLifecycle(o);
  fun::Status s = fun::harness::WriteReports(r, report_dir);
  if (!s.ok()) std::cerr << "fun-harness: " << s.message() << "\n";
  int passed = 0, failed = 0;
  for (const auto& step : r.steps) (step.ok ? passed : failed)++;
  std::cout << "fun-harness " << r.name << ": " << passed << " passed, " << failed << " failed ("
            << r.seconds << " s); reports in " << report_dir << "\n";
  if (failed > 0) {
    for (const auto& step : r.steps) {
      if (!step.ok && !step.attachments.empty()) {
        std::cout << "--- " << step.name << ": " << step.message << "\n" << step.attachments;
        break;
      }
    }
  }
  return r.ok() ? 0 : 1;
}

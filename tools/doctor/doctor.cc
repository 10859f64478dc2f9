#include "tools/doctor/doctor.h"

#include <fmt/format.h>

#include <algorithm>

#include "lib/base/flags.h"
#include "lib/base/instance_config.h"
#include "lib/net/agent_protocol.h"
#include "lib/net/dns.h"
#include "tools/doctor/bundle.h"
#include "tools/doctor/checks.h"
#include "tools/doctor/runner.h"

namespace fun::doctor {
namespace {

constexpr const char kUsage[] =
    "usage: fun-doctor [--instance NAME] [--check ID]... [--fix] [--json] [--verbose] [--list]\n"
    "                  [--dns-name NAME] [--dns-server IP:PORT]\n"
    "       fun-doctor bundle [--instance NAME] [--out DIR|FILE.tar] [--json]\n"
    "\n"
    "Checks the host, the VM image and an instance, and says what to do about each problem.\n"
    "Every check has a page in docs/troubleshooting/<ID>.md.\n"
    "\n"
    "--fix repairs what is safe to repair unattended (stale pid files and sockets, the modes of\n"
    "the instance's files, the VM's clock, a VM without its fun-hostd or stuck starting for 10\n"
    "minutes), says what it did, then checks again. It never deletes user data and never stops\n"
    "a VM that works. With --json the output is then an object:\n"
    "{\"fixes\": [{\"id\", \"actions\", \"error\"}...], \"checks\": [the checks after the "
    "fixes]}.\n"
    "\n"
    "bundle runs every check and writes a support archive (a tar: versions, the checks, status,\n"
    "config and state with secrets redacted, the tails of the logs; never the instance secret\n"
    "or user data), then prints its path (--json: {\"path\", \"files\", \"notes\"}).\n"
    "\n"
    "Exit status: 0 all checks passed (warnings allowed), 1 a check failed, 2 fun-doctor\n"
    "could not run (bad flags, unknown check id).\n"
    "\n"
    "Flags:\n";

int Usage(std::ostream& err, const Status& s) {
  err << "fun-doctor: " << s.message() << "\n";
  return 2;
}

void PrintList(std::ostream& out, bool json) {
  if (json) {
    nlohmann::ordered_json all = nlohmann::ordered_json::array();
    for (const Check& c : AllChecks()) {
      all.push_back(
          {{"id", c.id}, {"title", c.title}, {"hint", c.hint}, {"doc", c.doc}, {"fatal", c.fatal}});
    }
    out << JsonDump(all) << "\n";
    return;
  }
  size_t w = 0;
  for (const Check& c : AllChecks()) w = std::max(w, c.title.size());
  for (const Check& c : AllChecks()) {
    out << fmt::format("{}  {:<{}}  {:<5}  {}\n", c.id, c.title, w, c.fatal ? "fatal" : "", c.doc);
  }
}

}  // namespace

int Run(const std::vector<std::string>& args, const PathsInput& paths_input, DoctorEnv& env,
        std::ostream& out, std::ostream& err) {
  std::string instance = "default";
  std::vector<std::string> ids;
  bool json = false, verbose = false, list = false, help = false, fix = false;
  std::string bundle_out;
  bool bundle = !args.empty() && args.front() == "bundle";
  DoctorOptions options;
  FlagSet flags("fun-doctor");
  flags.String("instance", &instance, "the instance to check (default \"default\")");
  flags.Repeated("check", &ids, "run only this check (repeatable), e.g. FUN0011");
  flags.Bool("json", &json, "print a JSON array of results");
  flags.Bool("verbose", &verbose, "show the detail lines of passing checks too", 'v');
  flags.Bool("list", &list, "list the checks and exit");
  flags.Bool("fix", &fix, "repair what is safe to repair, then check again");
  flags.String("out", &bundle_out,
               "bundle: the folder to write the archive in, or its path (*.tar); default: the "
               "state dir");
  flags.String(
      "dns-name", &options.dns_name,
      fmt::format("the name FUN0016 has the VM resolve (default \"{}\")", kDefaultDnsName));
  flags.String("dns-server", &options.dns_server,
               fmt::format("the nameserver FUN0016 asks, as the VM reaches it (default {})",
                           kDefaultVmNameserver));
  flags.Bool("help", &help, "show this help", 'h');
  auto rest = flags.Parse(bundle ? std::vector<std::string>(args.begin() + 1, args.end()) : args);
  if (!rest.ok()) return Usage(err, rest.status());
  if (help) {
    out << kUsage << flags.Usage();
    return 0;
  }
  if (!rest->empty()) {
    return Usage(
        err, InvalidArgumentError(fmt::format(
                 "unexpected argument \"{}\": name the instance with --instance", rest->front())));
  }
  if (list) {
    PrintList(out, json);
    return 0;
  }
  if (!bundle_out.empty() && !bundle) {
    return Usage(err, InvalidArgumentError("--out is for `fun-doctor bundle`"));
  }
  if (bundle && (fix || !ids.empty())) {
    return Usage(err, InvalidArgumentError(
                          "bundle runs every check and repairs nothing: drop --fix and --check"));
  }
  // The name becomes a path: refuse a bad one before building any.
  if (Status s = ValidateInstanceName(instance); !s.ok()) return Usage(err, s);
  if (Status s = dns::ValidateHostName(options.dns_name); !s.ok()) {
    return Usage(err, s.WithContext("--dns-name"));
  }
  if (!agent::ParseTarget(options.dns_server).ok()) {
    return Usage(err, InvalidArgumentError(fmt::format(
                          "--dns-server: \"{}\" is not IP:PORT or [IPv6]:PORT (e.g. {})",
                          options.dns_server, kDefaultVmNameserver)));
  }
  std::vector<const Check*> run;
  if (ids.empty()) {
    for (const Check& c : AllChecks()) run.push_back(&c);
  } else {
    for (const std::string& id : ids) {
      const Check* c = FindCheck(id);
      if (c == nullptr) {
        return Usage(err, InvalidArgumentError(fmt::format(
                              "unknown check \"{}\": `fun-doctor --list` shows the checks", id)));
      }
      if (std::find(run.begin(), run.end(), c) == run.end()) run.push_back(c);
    }
  }
  auto paths = ResolvePaths(paths_input);
  if (!paths.ok()) {
    err << "fun-doctor: cannot tell where Fun keeps its state: " << paths.status().message()
        << "\n";
    return 2;
  }
  DoctorContext ctx(env, *paths, instance, options);
  Report report = RunChecks(ctx, run);
  if (bundle) {
    auto b = WriteBundle(ctx, report, {.out = bundle_out});
    if (!b.ok()) {
      err << "fun-doctor: bundle: " << b.status().message() << "\n";
      return 2;
    }
    if (json) {
      nlohmann::ordered_json j = {{"path", b->path}, {"files", b->files}, {"notes", b->notes}};
      out << JsonDump(j) << "\n";
    } else {
      out << fmt::format("fun-doctor: wrote {} ({} files; {} of {} checks passed)\n", b->path,
                         b->files.size(), report.Count(CheckStatus::kPass), report.findings.size());
      for (const auto& n : b->notes) out << "  not collected: " << n << "\n";
    }
    return 0;
  }
  std::vector<FixOutcome> fixes;
  if (fix) {
    fixes = RunFixes(ctx, report);
    // Look again with nothing cached: the repairs changed what the first look saw.
    DoctorContext again(env, *paths, instance, std::move(options));
    report = RunChecks(again, run);
  }
  if (json) {
    if (fix) {
      nlohmann::ordered_json j = {{"fixes", FixesToJson(fixes)}, {"checks", ReportToJson(report)}};
      out << JsonDump(j) << "\n";
    } else {
      out << JsonDump(ReportToJson(report)) << "\n";
    }
  } else {
    out << fmt::format("fun-doctor: instance {} (state dir {})\n\n", instance, paths->state_dir);
    if (fix) {
      PrintFixes(fixes, out);
      out << "\n";
    }
    PrintTable(report, out, verbose);
  }
  out.flush();
  return report.Failed() ? 1 : 0;
}

}  // namespace fun::doctor

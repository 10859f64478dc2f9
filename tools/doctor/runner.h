// runner.h: runs doctor checks and reports their results, as a table for people or as JSON.
//
//   DoctorContext ctx(env, paths, "default");
//   Report report = RunChecks(ctx, {FindCheck("FUN0001"), FindCheck("FUN0009")});
//   PrintTable(report, std::cout, /*verbose=*/false);
//   std::cout << ReportToJson(report).dump(2) << "\n";
//   return report.Failed() ? 1 : 0;
//
// A probe that throws is reported as a failure of that check ("the check itself failed: ..."),
// never as a crash of the doctor. "{instance}" in a hint becomes the instance's name.
//
// The JSON is an array, one object per check run, in order:
//   {"id": "FUN0001", "title": "...", "status": "pass|warn|fail|skip", "summary": "...",
//    "detail": ["..."], "hint": "...", "doc": "docs/troubleshooting/FUN0001.md", "fatal": true}
// Text that came from the guest or from files is sanitized; invalid UTF-8 is replaced when
// written (json_dump below).
//
// Thread-safety: RunChecks uses the context on the calling thread; the rest is pure.
#pragma once

#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "tools/doctor/check.h"

namespace fun::doctor {

struct Finding {
  const Check* check = nullptr;
  CheckResult result;
  std::string hint;  // the result's hint, else the check's, with {instance} filled in
};

struct Report {
  std::string instance;
  std::vector<Finding> findings;

  size_t Count(CheckStatus status) const;
  bool Failed() const { return Count(CheckStatus::kFail) > 0; }
};

Report RunChecks(DoctorContext& ctx, const std::vector<const Check*>& checks);

// What `--fix` did for one check.
struct FixOutcome {
  const Check* check = nullptr;
  std::vector<std::string> actions;  // what it changed, one line each; empty: nothing to do
  std::string error;                 // why it stopped ("" when it did all it meant to)
};
// Runs the repair of every finding that warned or failed and whose check has one, in order.
// A repair that throws is reported as its error.
std::vector<FixOutcome> RunFixes(DoctorContext& ctx, const Report& report);
// "fixed FUN0008: removed .../hostd.pid" lines, "could not fix ..." for errors; "nothing to fix"
// when no repair changed anything.
void PrintFixes(const std::vector<FixOutcome>& fixes, std::ostream& out);
nlohmann::ordered_json FixesToJson(const std::vector<FixOutcome>& fixes);

// The table: one row per check (id, status, title, summary); under a warning or a failure its
// detail lines, hint and page; with `verbose` the detail lines of every check. Ends with a
// count line.
void PrintTable(const Report& report, std::ostream& out, bool verbose);

nlohmann::ordered_json ReportToJson(const Report& report);
// JSON text (keys in the order above) that never throws on invalid UTF-8 (it is replaced
// with U+FFFD).
std::string JsonDump(const nlohmann::ordered_json& j);

}  // namespace fun::doctor

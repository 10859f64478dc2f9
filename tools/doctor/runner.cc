#include "tools/doctor/runner.h"

#include <fmt/format.h>

#include <algorithm>
#include <exception>

namespace fun::doctor {
namespace {

std::string ReplaceAll(std::string s, std::string_view from, std::string_view to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
  return s;
}

std::string_view Label(CheckStatus s) {
  switch (s) {
    case CheckStatus::kPass:
      return "PASS";
    case CheckStatus::kWarn:
      return "WARN";
    case CheckStatus::kFail:
      return "FAIL";
    case CheckStatus::kSkip:
      return "SKIP";
  }
  return "?";
}

}  // namespace

size_t Report::Count(CheckStatus status) const {
  return static_cast<size_t>(std::count_if(findings.begin(), findings.end(), [&](const Finding& f) {
    return f.result.status == status;
  }));
}

Report RunChecks(DoctorContext& ctx, const std::vector<const Check*>& checks) {
  Report report;
  report.instance = ctx.instance();
  for (const Check* c : checks) {
    Finding f;
    f.check = c;
    try {
      f.result = c->probe ? c->probe(ctx) : CheckResult::Skip("no probe");
    } catch (const std::exception& e) {
      f.result = CheckResult::Fail(fmt::format("the check itself failed: {}", e.what()));
    }
    f.hint =
        ReplaceAll(f.result.hint.empty() ? c->hint : f.result.hint, "{instance}", ctx.instance());
    report.findings.push_back(std::move(f));
  }
  return report;
}

std::vector<FixOutcome> RunFixes(DoctorContext& ctx, const Report& report) {
  std::vector<FixOutcome> out;
  for (const Finding& f : report.findings) {
    if (!f.check->fix) continue;
    if (f.result.status != CheckStatus::kWarn && f.result.status != CheckStatus::kFail) continue;
    FixOutcome o{.check = f.check};
    try {
      FixResult r = f.check->fix(ctx);
      if (r.ok()) {
        o.actions = std::move(*r);
      } else {
        o.error = std::string(r.status().message());
      }
    } catch (const std::exception& e) {
      o.error = fmt::format("the repair itself failed: {}", e.what());
    }
    out.push_back(std::move(o));
  }
  return out;
}

void PrintFixes(const std::vector<FixOutcome>& fixes, std::ostream& out) {
  bool any = false;
  for (const FixOutcome& f : fixes) {
    for (const std::string& a : f.actions) {
      out << fmt::format("fixed {}: {}\n", f.check->id, a);
      any = true;
    }
    if (!f.error.empty()) {
      out << fmt::format("could not fix {} ({}): {}\n", f.check->id, f.check->title, f.error);
      any = true;
    }
  }
  if (!any) out << "nothing to fix\n";
}

nlohmann::ordered_json FixesToJson(const std::vector<FixOutcome>& fixes) {
  nlohmann::ordered_json a = nlohmann::ordered_json::array();
  for (const FixOutcome& f : fixes) {
    a.push_back({{"id", f.check->id}, {"actions", f.actions}, {"error", f.error}});
  }
  return a;
}

void PrintTable(const Report& report, std::ostream& out, bool verbose) {
  size_t title_width = 5;
  for (const auto& f : report.findings) title_width = std::max(title_width, f.check->title.size());
  out << fmt::format("{:<8} {:<6} {:<{}}  {}\n", "ID", "STATUS", "CHECK", title_width, "RESULT");
  const std::string indent(16, ' ');
  for (const auto& f : report.findings) {
    const CheckResult& r = f.result;
    out << fmt::format("{:<8} {:<6} {:<{}}  {}\n", f.check->id, Label(r.status), f.check->title,
                       title_width, r.summary);
    bool problem = r.status == CheckStatus::kFail || r.status == CheckStatus::kWarn;
    if (problem || verbose) {
      for (const auto& d : r.detail) out << indent << d << "\n";
    }
    if (problem) {
      if (!f.hint.empty()) out << indent << "hint: " << f.hint << "\n";
      out << indent << "doc:  " << f.check->doc << "\n";
    }
  }
  size_t failed = report.Count(CheckStatus::kFail);
  size_t blocking = static_cast<size_t>(std::count_if(
      report.findings.begin(), report.findings.end(),
      [](const Finding& f) { return f.result.status == CheckStatus::kFail && f.check->fatal; }));
  out << fmt::format("\n{} check{}: {} passed, {} warning{}, {} failed{}, {} skipped\n",
                     report.findings.size(), report.findings.size() == 1 ? "" : "s",
                     report.Count(CheckStatus::kPass), report.Count(CheckStatus::kWarn),
                     report.Count(CheckStatus::kWarn) == 1 ? "" : "s", failed,
                     blocking > 0 ? fmt::format(" ({} keep{} any instance from starting)", blocking,
                                                blocking == 1 ? "s" : "")
                                  : "",
                     report.Count(CheckStatus::kSkip));
}

nlohmann::ordered_json ReportToJson(const Report& report) {
  nlohmann::ordered_json all = nlohmann::ordered_json::array();
  for (const auto& f : report.findings) {
    all.push_back({{"id", f.check->id},
                   {"title", f.check->title},
                   {"status", CheckStatusName(f.result.status)},
                   {"summary", f.result.summary},
                   {"detail", f.result.detail},
                   {"hint", f.hint},
                   {"doc", f.check->doc},
                   {"fatal", f.check->fatal}});
  }
  return all;
}

std::string JsonDump(const nlohmann::ordered_json& j) {
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace fun::doctor

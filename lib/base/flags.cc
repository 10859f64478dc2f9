#include "lib/base/flags.h"

#include <fmt/format.h>

#include <charconv>
#include <optional>

namespace fun {

void FlagSet::Bool(std::string name, bool* out, std::string help, char short_name) {
  flags_.push_back({std::move(name), short_name, Kind::kBool, std::move(help), out});
}
void FlagSet::String(std::string name, std::string* out, std::string help, char short_name) {
  flags_.push_back({std::move(name), short_name, Kind::kString, std::move(help), out});
}
void FlagSet::Int(std::string name, int* out, std::string help, char short_name) {
  flags_.push_back({std::move(name), short_name, Kind::kInt, std::move(help), out});
}
void FlagSet::Repeated(std::string name, std::vector<std::string>* out, std::string help,
                       char short_name) {
  flags_.push_back({std::move(name), short_name, Kind::kRepeated, std::move(help), out});
}

const FlagSet::Flag* FlagSet::Find(std::string_view name) const {
  for (const Flag& f : flags_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

const FlagSet::Flag* FlagSet::FindShort(char c) const {
  for (const Flag& f : flags_) {
    if (f.short_name != 0 && f.short_name == c) return &f;
  }
  return nullptr;
}

StatusOr<int> ParseInt(std::string_view text, std::string_view what) {
  int v = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc() || ptr != end) {
    return InvalidArgumentError(fmt::format("{}: \"{}\" is not an integer", what, text));
  }
  return v;
}

Status FlagSet::Set(const Flag& f, std::string_view value) {
  switch (f.kind) {
    case Kind::kBool:
      *static_cast<bool*>(f.out) = true;
      return OkStatus();
    case Kind::kString:
      *static_cast<std::string*>(f.out) = std::string(value);
      return OkStatus();
    case Kind::kInt: {
      FUN_ASSIGN_OR_RETURN(int v, ParseInt(value, "--" + f.name));
      *static_cast<int*>(f.out) = v;
      return OkStatus();
    }
    case Kind::kRepeated:
      static_cast<std::vector<std::string>*>(f.out)->emplace_back(value);
      return OkStatus();
  }
  return InternalError("unknown flag kind");
}

StatusOr<std::vector<std::string>> FlagSet::Parse(const std::vector<std::string>& args,
                                                  bool stop_at_first_positional) {
  std::vector<std::string> positionals;
  auto unknown = [&](std::string_view shown) {
    return InvalidArgumentError(fmt::format("unknown flag {}: see '{} --help'", shown, command_));
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      positionals.insert(positionals.end(), args.begin() + static_cast<long>(i) + 1, args.end());
      break;
    }
    if (a.size() > 2 && a[0] == '-' && a[1] == '-') {
      std::string_view body = std::string_view(a).substr(2);
      std::string_view name = body;
      std::optional<std::string_view> inline_value;
      if (auto eq = body.find('='); eq != std::string_view::npos) {
        name = body.substr(0, eq);
        inline_value = body.substr(eq + 1);
      }
      const Flag* f = Find(name);
      if (f == nullptr) return unknown("--" + std::string(name));
      if (f->kind == Kind::kBool) {
        if (inline_value) {
          return InvalidArgumentError(fmt::format("--{} takes no value", f->name));
        }
        FUN_RETURN_IF_ERROR(Set(*f, ""));
        continue;
      }
      if (!inline_value) {
        if (i + 1 >= args.size()) {
          return InvalidArgumentError(
              fmt::format("--{} needs a value: see '{} --help'", f->name, command_));
        }
        inline_value = args[++i];
      }
      FUN_RETURN_IF_ERROR(Set(*f, *inline_value));
      continue;
    }
    if (a.size() > 1 && a[0] == '-' && a != "-") {
      // Short flags: "-d", "-it" (bools grouped), "-eK=V" or "-e K=V".
      for (size_t j = 1; j < a.size(); ++j) {
        const Flag* f = FindShort(a[j]);
        if (f == nullptr) return unknown(std::string("-") + a[j]);
        if (f->kind == Kind::kBool) {
          FUN_RETURN_IF_ERROR(Set(*f, ""));
          continue;
        }
        std::string value;
        if (j + 1 < a.size()) {
          value = a.substr(j + 1);
        } else if (i + 1 < args.size()) {
          value = args[++i];
        } else {
          return InvalidArgumentError(
              fmt::format("-{} needs a value: see '{} --help'", a[j], command_));
        }
        FUN_RETURN_IF_ERROR(Set(*f, value));
        break;
      }
      continue;
    }
    if (stop_at_first_positional) {
      positionals.insert(positionals.end(), args.begin() + static_cast<long>(i), args.end());
      break;
    }
    positionals.push_back(a);
  }
  return positionals;
}

std::string FlagSet::Usage() const {
  std::string out;
  for (const Flag& f : flags_) {
    std::string left = f.short_name ? fmt::format("-{}, --{}", f.short_name, f.name)
                                    : fmt::format("    --{}", f.name);
    switch (f.kind) {
      case Kind::kBool:
        break;
      case Kind::kInt:
        left += " N";
        break;
      case Kind::kString:
      case Kind::kRepeated:
        left += " VALUE";
        break;
    }
    out += fmt::format("  {:<24} {}\n", left, f.help);
  }
  return out;
}

}  // namespace fun

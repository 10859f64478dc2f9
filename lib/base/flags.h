// flags.h: the command-line parser every Fun tool uses, so flags behave the same everywhere.
//
// Long flags only (`--cpus 4`, `--cpus=4`), plus declared short aliases (`-d`, `-e K=V`);
// booleans take no value; repeatable flags collect every value; `--` ends flags. Errors are one
// line that names the flag and says what to do ("--cpus: \"four\" is not an integer").
//
//   fun::FlagSet flags("fun-vmctl start");
//   int cpus = 2; bool json = false;
//   flags.Int("cpus", &cpus, "virtual CPUs");
//   flags.Bool("json", &json, "print JSON");
//   StatusOr<std::vector<std::string>> rest = flags.Parse(args);  // positionals
//
// Thread-safety: none; parse on one thread.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/status.h"

namespace fun {

class FlagSet {
 public:
  explicit FlagSet(std::string command) : command_(std::move(command)) {}

  void Bool(std::string name, bool* out, std::string help, char short_name = 0);
  void String(std::string name, std::string* out, std::string help, char short_name = 0);
  void Int(std::string name, int* out, std::string help, char short_name = 0);
  // Each occurrence appends (`-e A=1 -e B=2`).
  void Repeated(std::string name, std::vector<std::string>* out, std::string help,
                char short_name = 0);

  // Parses args (without the program name). Returns the positional arguments in order.
  // Flags may appear before or between positionals unless stop_at_first_positional is set
  // (then everything from the first positional on is returned as is: `fun run IMAGE CMD -x`).
  StatusOr<std::vector<std::string>> Parse(const std::vector<std::string>& args,
                                           bool stop_at_first_positional = false);

  // "  --cpus N        virtual CPUs" lines, for --help.
  std::string Usage() const;
  const std::string& command() const { return command_; }

 private:
  enum class Kind { kBool, kString, kInt, kRepeated };
  struct Flag {
    std::string name;
    char short_name;
    Kind kind;
    std::string help;
    void* out;
  };
  const Flag* Find(std::string_view name) const;
  const Flag* FindShort(char c) const;
  Status Set(const Flag& f, std::string_view value);

  std::string command_;
  std::vector<Flag> flags_;
};

// Parses a whole decimal int ("12"; not "12x", "", "1e3"); InvalidArgument names `what`.
StatusOr<int> ParseInt(std::string_view text, std::string_view what);

}  // namespace fun

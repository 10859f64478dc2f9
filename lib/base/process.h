// process.h: running other programs, behind an interface that tests can fake.
//
// Logic never forks or execs directly: it takes a `ProcessRunner&`. Production code passes
// `ProcessRunner::Default()` (BoostProcessRunner: real children, started with Boost.Process);
// tests pass a `FakeProcessRunner` (fake_process.h) scripted per program name.
//
// Two ways to run a program:
//   - `Run()` for short-lived tools (qemu-img, ip, mkfs): runs to completion, feeds stdin,
//     captures stdout and stderr, and enforces `Command::timeout` (SIGTERM, then SIGKILL after
//     `kill_grace`). A non-zero exit is not an error Status: it is in the ProcessResult (see
//     `CheckExit` to turn it into one). A program that cannot be started (not found, not
//     executable) is an error: NotFound / PermissionDenied, "starting <program>: ...".
//   - `Start()` for long-lived children (the hypervisor): returns a `Process` to poll, signal,
//     wait for and terminate. Destroying a Process whose child still runs kills (SIGKILL) and
//     reaps it, so no zombie or orphan is left behind.
//
// Example:
//   fun::Command cmd{.program = "qemu-img", .args = {"create", "-f", "raw", path, "8G"}};
//   cmd.timeout = std::chrono::seconds(30);
//   FUN_ASSIGN_OR_RETURN(fun::ProcessResult result, runner.Run(cmd));
//   FUN_RETURN_IF_ERROR(fun::CheckExit(cmd, result));  // "qemu-img exited with 1: <stderr>"
//
//   fun::Command vm{.program = "qemu-system-x86_64", .args = args, .capture_output = false};
//   vm.stdout_file = vm.stderr_file = instance_dir + "/hostd.log";
//   FUN_ASSIGN_OR_RETURN(std::unique_ptr<fun::Process> qemu, runner.Start(vm));
//   ...
//   FUN_RETURN_IF_ERROR(qemu->Terminate(std::chrono::seconds(10)));
//
// Process groups: by default a child stays in the caller's process group, so a Ctrl-C at the
// terminal reaches it as it reaches the caller, and signals (timeout, Terminate, destructor) go
// to the child alone; a grandchild that outlives it is not ours to kill. With
// `Command::new_process_group` the child leads a group of its own and every signal we send goes
// to the whole group (so helpers it forked die with it), but the terminal's Ctrl-C no longer
// reaches it: the caller must stop it.
//
// Thread-safety: ProcessRunner implementations are safe to share between threads. A Process
// may be used from several threads at once (one blocked in Wait while another calls
// Terminate), but must not be destroyed while another thread still uses it.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/status.h"

namespace fun {

// What to run and how. Every field has a default, so designated initializers may name only
// the fields they need: `Command{.program = "ip", .args = {"link"}}`.
struct Command {
  // A name looked up in PATH (the child's PATH: env_overrides' if it sets one, else ours), or
  // a path containing '/', used as is (relative to working_dir when that is set).
  std::string program{};
  // The arguments after argv[0]; passed as they are, never interpreted by a shell.
  std::vector<std::string> args{};
  // Added to (or replacing entries of) the environment inherited from this process.
  std::map<std::string, std::string> env_overrides{};
  // The child's working directory (default: ours). It must exist.
  std::optional<std::string> working_dir{};
  // Written to the child's stdin, which is then closed. Without it stdin is /dev/null.
  std::optional<std::string> stdin_data{};
  // Run() only: after this long the child gets SIGTERM, then SIGKILL after kill_grace, and
  // the result says timed_out. Start() ignores it: pass a timeout to Process::Wait instead.
  std::optional<std::chrono::milliseconds> timeout{};
  // How long a child may take to exit after SIGTERM before it gets SIGKILL.
  std::chrono::milliseconds kill_grace{2000};
  // true: stdout and stderr are captured into ProcessResult. false: the child writes to our
  // own stdout and stderr (pass "/dev/null" as a file below to discard instead). A child from
  // Start() keeps its captured output in memory until Wait: give a chatty long-lived child
  // files instead.
  bool capture_output = true;
  // When set, the stream is appended to this file (created 0600 if missing) instead of being
  // captured or inherited, e.g. the hypervisor's log. May name the same file for both.
  std::optional<std::string> stdout_file{};
  std::optional<std::string> stderr_file{};
  // Puts the child in a new process group and sends every signal to the group (see the top).
  bool new_process_group = false;
  // Linux: the child gets this signal when the thread that started it ends (PR_SET_PDEATHSIG;
  // start long-lived children from a thread that lives as long as the process, e.g. main).
  // 0: none. macOS has no equivalent: ignored there.
  int parent_death_signal = 0;

  // The command line, shell-quoted, for logs and error messages:
  // `qemu-img create -f raw '/tmp/my disk.img' 8G`. The environment and stdin are left out
  // (they may carry secrets).
  std::string ToString() const;
};

// How a child ended.
struct ProcessResult {
  // The exit status, or -1 if a signal killed the child.
  int exit_code = 0;
  // The signal that killed the child, or 0 if it exited.
  int term_signal = 0;
  // Run() stopped the child because Command::timeout passed.
  bool timed_out = false;
  // Captured output (empty when not captured).
  std::string stdout_data{};
  std::string stderr_data{};
  // From start to exit.
  std::chrono::milliseconds elapsed{0};

  // Exit status 0, no signal, no timeout.
  bool ok() const { return exit_code == 0 && term_signal == 0 && !timed_out; }
  // "exited with 1", "killed by signal 9 (SIGKILL)",
  // "timed out after 1.0 s and was killed by signal 15 (SIGTERM)".
  std::string Describe() const;

  // Shorthands for tests and fakes.
  static ProcessResult Exited(int exit_code, std::string stdout_data = "",
                              std::string stderr_data = "");
  static ProcessResult Signaled(int term_signal);
};

// OK if `result.ok()`; otherwise an error naming the program, what happened and the last line
// it wrote to stderr: "qemu-img exited with 1: qemu-img: Could not create 'x': Permission
// denied". A timeout is DeadlineExceeded; any other failure Unknown.
Status CheckExit(const Command& command, const ProcessResult& result);

// A started child. Obtained from ProcessRunner::Start.
class Process {
 public:
  Process() = default;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  // Kills (SIGKILL) and reaps a child that still runs.
  virtual ~Process() = default;

  virtual int pid() const = 0;
  // Whether the child has not exited yet.
  virtual bool Running() = 0;
  // Blocks until the child exits (at most `timeout`, if given), then returns how it ended,
  // with any output captured (output still written by a grandchild that inherited the pipes
  // is read for up to 1 s more). When the timeout passes first: DeadlineExceeded, and the
  // child is left running. May be called again; it returns the same result.
  virtual StatusOr<ProcessResult> Wait(std::optional<std::chrono::milliseconds> timeout) = 0;
  // Sends `sig` (to the group with Command::new_process_group). FailedPrecondition once the
  // child has exited.
  virtual Status Signal(int sig) = 0;
  // SIGTERM; if the child has not exited after `grace`, SIGKILL; returns once it has exited
  // and been reaped (then Wait returns at once). OK if it had already exited.
  virtual Status Terminate(std::chrono::milliseconds grace) = 0;
};

class ProcessRunner {
 public:
  virtual ~ProcessRunner() = default;

  // Runs `command` to completion (see the top of the file). The default implementation is
  // Start + Wait(timeout) + Terminate(kill_grace) on timeout, so a runner need only Start.
  virtual StatusOr<ProcessResult> Run(const Command& command);
  // Starts `command` and returns at once.
  virtual StatusOr<std::unique_ptr<Process>> Start(const Command& command) = 0;

  // The process-wide BoostProcessRunner (never destroyed).
  static ProcessRunner& Default();
};

// Real children, forked and exec'd with Boost.Process; see process_boost.cc.
//
// It reaps its own children with waitpid(pid), never waitpid(-1): the embedding program must
// not reap children it did not start (no SIGCHLD set to SIG_IGN, no Boost.Process on_exit),
// or Wait reports an error. Each started child costs one waiter thread, plus one I/O thread
// while stdin is fed or output captured.
class BoostProcessRunner final : public ProcessRunner {
 public:
  StatusOr<std::unique_ptr<Process>> Start(const Command& command) override;
};

// Finds the program `name` as execvp would, in the ':'-separated directory list `path_env`.
// A name containing '/' is returned as is if it names an executable file. Empty entries in
// `path_env` are skipped (unlike execvp, the current directory is never searched by accident).
// NotFound if no entry has it; PermissionDenied if the only matches are not executable (or
// the name with '/' is a directory or not executable).
StatusOr<std::string> FindProgram(std::string_view name, const std::string& path_env);

// `word` quoted for a POSIX shell when it needs to be: `ab` -> `ab`, `a b` -> `'a b'`,
// `it's` -> `'it'\''s'`, `` -> `''`.
std::string ShellQuote(std::string_view word);

// "SIGTERM", "SIGKILL", ...; "signal <n>" for a number without a name here.
std::string SignalName(int sig);

}  // namespace fun

// fake_process.h: a scripted ProcessRunner for tests of code that runs programs.
//
// A test says, per program, what running it does: return a result, fail to start, or start
// and keep running until the test makes it exit. The runner records every Command it was
// given, so the test can check the exact command line. A program nobody scripted fails to
// start with NotFound "no fake registered for <program>".
//
// Example:
//   fun::FakeProcessRunner runner;
//   runner.Expect("qemu-img").Returns(fun::ProcessResult::Exited(0));
//   runner.Expect("mkfs.ext4").Fails(fun::PermissionDeniedError("starting mkfs.ext4: ..."));
//   runner.Expect("qemu-system-x86_64").StartsRunning();
//
//   CreateDisk(runner, ...);                       // code under test calls runner.Run
//   EXPECT_EQ(runner.calls()[0].args[0], "create");
//
//   std::thread vm([&] { Supervise(runner); });   // calls runner.Start, then Wait
//   auto qemu = runner.WaitForStart("qemu-system-x86_64", std::chrono::seconds(5));
//   ASSERT_TRUE(qemu.ok());
//   (*qemu)->Exit(1, "", "qemu: could not open /dev/kvm");
//
// Matching: an expectation matches a command whose program equals its name, or whose
// program's last path component does (Expect("qemu-img") matches "/usr/bin/qemu-img"), and
// passes WithArgs / When if given. Expectations are tried in the order they were added; one
// that has answered its Times(n) commands is skipped.
//
// Time: FakeProcess::Wait and Terminate wait in real time (a condition variable), so tests
// pass short timeouts and graces. Run with Command::timeout works as with real processes.
//
// Thread-safety: FakeProcessRunner and FakeProcess are safe to use from several threads (code
// under test on one, the test driving exits on another).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/process.h"

namespace fun {

// A child that a test controls. The code under test holds it as a Process (the runner hands
// out a handle; destroying the handle while it runs kills it, as with a real child); the test
// holds it as a std::shared_ptr<FakeProcess>.
class FakeProcess final : public Process {
 public:
  FakeProcess(Command command, int pid);

  // Process:
  int pid() const override { return pid_; }
  bool Running() override;
  StatusOr<ProcessResult> Wait(std::optional<std::chrono::milliseconds> timeout) override;
  // Records `sig`. SIGKILL ends the child (term_signal SIGKILL); so does any other signal
  // whose default action is to terminate, unless IgnoreSignal'd. 0, SIGCHLD, SIGCONT,
  // SIGWINCH, SIGURG and the stop signals change nothing.
  Status Signal(int sig) override;
  Status Terminate(std::chrono::milliseconds grace) override;

  // Test controls. Each ends a running child (no effect once it has ended).
  void Exit(int exit_code, std::string stdout_data = "", std::string stderr_data = "");
  void KillBySignal(int sig);
  // Ends it with `result` as is (its elapsed too).
  void Finish(ProcessResult result);
  // From now on `sig` is ignored (as `trap "" TERM` would). SIGKILL cannot be ignored.
  void IgnoreSignal(int sig);

  const Command& command() const { return command_; }
  // Every signal received, in order.
  std::vector<int> signals() const;

 private:
  void FinishLocked(ProcessResult result);

  const Command command_;
  const int pid_;
  const std::chrono::steady_clock::time_point start_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<ProcessResult> result_;
  std::set<int> ignored_;
  std::vector<int> signals_;
};

class FakeProcessRunner final : public ProcessRunner {
 public:
  // What commands for one program do. Built with the chained setters below; without an
  // action, a matching command exits 0 with no output.
  class Expectation {
   public:
    // Matches only commands with exactly these arguments.
    Expectation& WithArgs(std::vector<std::string> args);
    // Matches only commands for which `matcher` returns true (called with the runner locked:
    // it must not call back into the runner).
    Expectation& When(std::function<bool(const Command&)> matcher);
    // Answers at most `n` commands, then is skipped. Default: any number.
    Expectation& Times(int n);
    // The FakeProcess it starts reports `pid` instead of a made-up one (1000, 1001, ...). For
    // code that checks the pid with the OS, e.g. writes a pid file with the process's start
    // time: pass the pid of a real process that stands in for the child (a `sleep`, or the
    // test itself). The fake never signals that process.
    Expectation& WithPid(int pid);

    // Actions (the last one set wins).
    // Run returns `result`; Start returns a FakeProcess that has already ended with it.
    Expectation& Returns(ProcessResult result);
    // Run and Start return `status` (the program could not be started).
    Expectation& Fails(Status status);
    // Start returns a running FakeProcess (see WaitForStart / started()); Run blocks until
    // the test ends it or Command::timeout passes.
    Expectation& StartsRunning();

    // How many commands this expectation answered.
    int call_count() const;

   private:
    friend class FakeProcessRunner;
    enum class Action { kReturn, kFail, kStartRunning };
    Expectation(FakeProcessRunner* runner, std::string program);
    bool Matches(const Command& command) const;  // requires runner_->mu_

    FakeProcessRunner* runner_;
    std::string program_;
    std::optional<std::vector<std::string>> args_;
    std::function<bool(const Command&)> matcher_;
    std::optional<int> times_;
    std::optional<int> pid_;
    int calls_ = 0;
    Action action_ = Action::kReturn;
    ProcessResult result_;
    Status status_;
  };

  FakeProcessRunner() = default;
  FakeProcessRunner(const FakeProcessRunner&) = delete;
  FakeProcessRunner& operator=(const FakeProcessRunner&) = delete;

  // Adds an expectation for `program`; the reference stays valid as long as the runner.
  Expectation& Expect(std::string program);

  // ProcessRunner (Run is the default one: Start, Wait, Terminate on timeout).
  StatusOr<std::unique_ptr<Process>> Start(const Command& command) override;

  // Every command received (matched or not), in order.
  std::vector<Command> calls() const;
  // Every FakeProcess handed out, in order.
  std::vector<std::shared_ptr<FakeProcess>> started() const;
  // The first FakeProcess for `program` (matched as expectations are) not yet returned by an
  // earlier WaitForStart, waiting up to `timeout` for the code under test to start it.
  // DeadlineExceeded if it does not.
  StatusOr<std::shared_ptr<FakeProcess>> WaitForStart(std::string_view program,
                                                      std::chrono::milliseconds timeout);

 private:
  static bool ProgramMatches(std::string_view expected, std::string_view program);

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Expectation>> expectations_;
  std::vector<Command> calls_;
  std::vector<std::shared_ptr<FakeProcess>> started_;
  std::vector<bool> claimed_;  // per started_ entry: returned by WaitForStart already
  int next_pid_ = 1000;
};

}  // namespace fun

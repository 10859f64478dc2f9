// fake_process.cc: FakeProcess and FakeProcessRunner (see fake_process.h).
#include "lib/base/fake_process.h"

#include <fmt/format.h>

#include <algorithm>
#include <csignal>
#include <utility>

namespace fun {
namespace {

using std::chrono::milliseconds;

// Signals whose default action is not to terminate (or that only stop, which is not modelled).
bool Harmless(int sig) {
  return sig == 0 || sig == SIGCHLD || sig == SIGCONT || sig == SIGWINCH || sig == SIGURG ||
         sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
}

std::string Who(const FakeProcess& p) {
  return fmt::format("{} (fake pid {})", p.command().program, p.pid());
}

// What the code under test holds: forwards to the shared FakeProcess, and kills it when
// dropped while it runs, as a real Process does.
class FakeProcessHandle final : public Process {
 public:
  explicit FakeProcessHandle(std::shared_ptr<FakeProcess> process) : process_(std::move(process)) {}
  ~FakeProcessHandle() override {
    if (process_->Running()) process_->Signal(SIGKILL).IgnoreError();
  }

  int pid() const override { return process_->pid(); }
  bool Running() override { return process_->Running(); }
  StatusOr<ProcessResult> Wait(std::optional<milliseconds> timeout) override {
    return process_->Wait(timeout);
  }
  Status Signal(int sig) override { return process_->Signal(sig); }
  Status Terminate(milliseconds grace) override { return process_->Terminate(grace); }

 private:
  std::shared_ptr<FakeProcess> process_;
};

}  // namespace

// ---- FakeProcess ----

FakeProcess::FakeProcess(Command command, int pid)
    : command_(std::move(command)), pid_(pid), start_(std::chrono::steady_clock::now()) {}

bool FakeProcess::Running() {
  std::lock_guard lock(mu_);
  return !result_.has_value();
}

StatusOr<ProcessResult> FakeProcess::Wait(std::optional<milliseconds> timeout) {
  std::unique_lock lock(mu_);
  auto ended = [this] { return result_.has_value(); };
  if (!timeout || *timeout >= std::chrono::hours(24 * 365)) {  // "forever"; avoids overflow
    cv_.wait(lock, ended);
  } else if (!cv_.wait_for(lock, std::max(*timeout, milliseconds(0)), ended)) {
    return DeadlineExceededError(
        fmt::format("waiting for {}: still running after {} ms", Who(*this), timeout->count()));
  }
  return *result_;
}

Status FakeProcess::Signal(int sig) {
  std::lock_guard lock(mu_);
  if (result_) return FailedPreconditionError(Who(*this) + " has already exited");
  signals_.push_back(sig);
  if (Harmless(sig) || (sig != SIGKILL && ignored_.count(sig) != 0)) return OkStatus();
  ProcessResult r = ProcessResult::Signaled(sig);
  r.elapsed = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start_);
  FinishLocked(std::move(r));
  return OkStatus();
}

Status FakeProcess::Terminate(milliseconds grace) {
  if (!Running()) return OkStatus();
  Signal(SIGTERM).IgnoreError();  // fails only if it ended meanwhile
  std::unique_lock lock(mu_);
  if (cv_.wait_for(lock, std::max(grace, milliseconds(0)),
                   [this] { return result_.has_value(); })) {
    return OkStatus();
  }
  lock.unlock();
  Signal(SIGKILL).IgnoreError();
  return OkStatus();
}

void FakeProcess::Exit(int exit_code, std::string stdout_data, std::string stderr_data) {
  ProcessResult r =
      ProcessResult::Exited(exit_code, std::move(stdout_data), std::move(stderr_data));
  std::lock_guard lock(mu_);
  r.elapsed = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start_);
  FinishLocked(std::move(r));
}

void FakeProcess::KillBySignal(int sig) {
  ProcessResult r = ProcessResult::Signaled(sig);
  std::lock_guard lock(mu_);
  r.elapsed = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start_);
  FinishLocked(std::move(r));
}

void FakeProcess::Finish(ProcessResult result) {
  std::lock_guard lock(mu_);
  FinishLocked(std::move(result));
}

void FakeProcess::IgnoreSignal(int sig) {
  std::lock_guard lock(mu_);
  ignored_.insert(sig);
}

std::vector<int> FakeProcess::signals() const {
  std::lock_guard lock(mu_);
  return signals_;
}

void FakeProcess::FinishLocked(ProcessResult result) {
  if (result_) return;
  result_ = std::move(result);
  cv_.notify_all();
}

// ---- FakeProcessRunner::Expectation ----

FakeProcessRunner::Expectation::Expectation(FakeProcessRunner* runner, std::string program)
    : runner_(runner), program_(std::move(program)) {}

FakeProcessRunner::Expectation& FakeProcessRunner::Expectation::WithArgs(
    std::vector<std::string> args) {
  std::lock_guard lock(runner_->mu_);
  args_ = std::move(args);
  return *this;
}

FakeProcessRunner::Expectation& FakeProcessRunner::Expectation::When(
    std::function<bool(const Command&)> matcher) {
  std::lock_guard lock(runner_->mu_);
  matcher_ = std::move(matcher);
  return *this;
}

FakeProcessRunner::Expectation& FakeProcessRunner::Expectation::Times(int n) {
  std::lock_guard lock(runner_->mu_);
  times_ = n;
  return *this;
}

FakeProcessRunner::Expectation& FakeProcessRunner::Expectation::WithPid(int pid) {
  std::lock_guard lock(runner_->mu_);
  pid_ = pid;
  return *this;
}

FakeProcessRunner::Expectation& FakeProcessRunner::Expectation::Returns(ProcessResult result) {
  std::lock_guard lock(runner_->mu_);
  action_ = Action::kReturn;
  result_ = std::move(result);
  return *this;
}

FakeProcessRunner::Expectation& FakeProcessRunner::Expectation::Fails(Status status) {
  std::lock_guard lock(runner_->mu_);
  action_ = Action::kFail;
  status_ = std::move(status);
  return *this;
}

FakeProcessRunner::Expectation& FakeProcessRunner::Expectation::StartsRunning() {
  std::lock_guard lock(runner_->mu_);
  action_ = Action::kStartRunning;
  return *this;
}

int FakeProcessRunner::Expectation::call_count() const {
  std::lock_guard lock(runner_->mu_);
  return calls_;
}

bool FakeProcessRunner::Expectation::Matches(const Command& command) const {
  if (!ProgramMatches(program_, command.program)) return false;
  if (times_ && calls_ >= *times_) return false;
  if (args_ && *args_ != command.args) return false;
  if (matcher_ && !matcher_(command)) return false;
  return true;
}

// ---- FakeProcessRunner ----

bool FakeProcessRunner::ProgramMatches(std::string_view expected, std::string_view program) {
  if (expected == program) return true;
  if (expected.find('/') != std::string_view::npos) return false;
  size_t slash = program.rfind('/');
  return slash != std::string_view::npos && program.substr(slash + 1) == expected;
}

FakeProcessRunner::Expectation& FakeProcessRunner::Expect(std::string program) {
  std::lock_guard lock(mu_);
  expectations_.push_back(std::unique_ptr<Expectation>(new Expectation(this, std::move(program))));
  return *expectations_.back();
}

StatusOr<std::unique_ptr<Process>> FakeProcessRunner::Start(const Command& command) {
  std::lock_guard lock(mu_);
  calls_.push_back(command);
  Expectation* match = nullptr;
  for (const std::unique_ptr<Expectation>& e : expectations_) {
    if (e->Matches(command)) {
      match = e.get();
      break;
    }
  }
  if (match == nullptr) return NotFoundError("no fake registered for " + command.program);
  ++match->calls_;
  if (match->action_ == Expectation::Action::kFail) {
    if (match->status_.ok()) return InternalError("Fails() was given an OK status");
    return match->status_;
  }
  auto process = std::make_shared<FakeProcess>(command, match->pid_ ? *match->pid_ : next_pid_++);
  if (match->action_ == Expectation::Action::kReturn) process->Finish(match->result_);
  started_.push_back(process);
  claimed_.push_back(false);
  cv_.notify_all();
  return std::unique_ptr<Process>(new FakeProcessHandle(std::move(process)));
}

std::vector<Command> FakeProcessRunner::calls() const {
  std::lock_guard lock(mu_);
  return calls_;
}

std::vector<std::shared_ptr<FakeProcess>> FakeProcessRunner::started() const {
  std::lock_guard lock(mu_);
  return started_;
}

StatusOr<std::shared_ptr<FakeProcess>> FakeProcessRunner::WaitForStart(std::string_view program,
                                                                       milliseconds timeout) {
  std::unique_lock lock(mu_);
  std::shared_ptr<FakeProcess> found;
  auto claim = [&] {
    for (size_t i = 0; i < started_.size(); ++i) {
      if (!claimed_[i] && ProgramMatches(program, started_[i]->command().program)) {
        claimed_[i] = true;
        found = started_[i];
        return true;
      }
    }
    return false;
  };
  if (!cv_.wait_for(lock, std::max(timeout, milliseconds(0)), claim)) {
    return DeadlineExceededError(
        fmt::format("no {} was started within {} ms", program, timeout.count()));
  }
  return found;
}

}  // namespace fun

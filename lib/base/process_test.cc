// process_test.cc: the process runner with real children (BoostProcessRunner), the pure
// helpers of process.h, and FakeProcessRunner.
//
// Real-process tests use /bin/sh, cat, head, sleep, pwd and printf; they make their files in a
// fresh temp dir under $TMPDIR. Durations are only checked against a generous hang guard.
#include "lib/base/process.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "lib/base/fake_process.h"

namespace fun {
namespace {

using std::chrono::milliseconds;
using namespace std::chrono_literals;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// Only a guard against hangs: nothing here should come near it.
constexpr auto kHangGuard = 10s;

Command Cmd(std::string program, std::vector<std::string> args = {}) {
  Command c;
  c.program = std::move(program);
  c.args = std::move(args);
  return c;
}

Command Sh(std::string script) { return Cmd("sh", {"-c", std::move(script)}); }

class TempDir {
 public:
  TempDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/fun_process_test.XXXXXX";
    char* made = ::mkdtemp(tmpl.data());
    EXPECT_NE(made, nullptr) << "mkdtemp " << tmpl << ": " << std::strerror(errno);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, const std::string& content, mode_t mode) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
  }
  ASSERT_EQ(::chmod(path.c_str(), mode), 0) << path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// True once `pid` no longer exists or is a zombie waiting for a parent that is not us (an
// orphan's zombie lingers where PID 1 does not reap; without /proc it counts as alive).
bool IsDead(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  if (::access("/proc/self/stat", R_OK) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;  // vanished meanwhile
  size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

template <typename Pred>
bool Eventually(Pred pred) {
  auto deadline = std::chrono::steady_clock::now() + kHangGuard;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);  // polling an outside effect; not a timing assumption
  }
  return pred();
}

// ---------------------------------------------------------------------------------------------
// Pure helpers.

TEST(ShellQuoteTest, QuotesOnlyWhatNeedsIt) {
  EXPECT_EQ(ShellQuote("plain-word_1.2/x:y,z@%+="), "plain-word_1.2/x:y,z@%+=");
  EXPECT_EQ(ShellQuote(""), "''");
  EXPECT_EQ(ShellQuote("a b"), "'a b'");
  EXPECT_EQ(ShellQuote("it's"), "'it'\\''s'");
  EXPECT_EQ(ShellQuote("$HOME;*"), "'$HOME;*'");
}

TEST(CommandTest, ToStringIsShellQuotedAndLeavesOutEnvironment) {
  Command c{.program = "qemu-img",
            .args = {"create", "-f", "raw", "/tmp/my disk.img", "8G", ""},
            .env_overrides = {{"SECRET", "hunter2"}}};
  EXPECT_EQ(c.ToString(), "qemu-img create -f raw '/tmp/my disk.img' 8G ''");
}

TEST(SignalNameTest, NamesCommonSignals) {
  EXPECT_EQ(SignalName(SIGKILL), "SIGKILL");
  EXPECT_EQ(SignalName(SIGTERM), "SIGTERM");
  EXPECT_EQ(SignalName(1234), "signal 1234");
}

TEST(ProcessResultTest, OkAndDescribe) {
  EXPECT_TRUE(ProcessResult::Exited(0).ok());
  EXPECT_EQ(ProcessResult::Exited(0).Describe(), "exited with 0");

  ProcessResult failed = ProcessResult::Exited(1, "out", "err");
  EXPECT_FALSE(failed.ok());
  EXPECT_EQ(failed.Describe(), "exited with 1");
  EXPECT_EQ(failed.stdout_data, "out");
  EXPECT_EQ(failed.stderr_data, "err");

  ProcessResult killed = ProcessResult::Signaled(SIGKILL);
  EXPECT_FALSE(killed.ok());
  EXPECT_EQ(killed.exit_code, -1);
  EXPECT_EQ(killed.Describe(), "killed by signal 9 (SIGKILL)");

  ProcessResult timed_out = ProcessResult::Signaled(SIGTERM);
  timed_out.timed_out = true;
  timed_out.elapsed = 1250ms;
  EXPECT_FALSE(timed_out.ok());
  EXPECT_EQ(timed_out.Describe(), "timed out after 1.2 s and was killed by signal 15 (SIGTERM)");

  ProcessResult stopped = ProcessResult::Exited(0);
  stopped.timed_out = true;
  stopped.elapsed = 3000ms;
  EXPECT_FALSE(stopped.ok());
  EXPECT_EQ(stopped.Describe(), "timed out after 3.0 s and exited with 0 when asked to stop");
}

TEST(CheckExitTest, NamesProgramOutcomeAndLastStderrLine) {
  Command cmd = Cmd("qemu-img", {"create"});
  EXPECT_TRUE(CheckExit(cmd, ProcessResult::Exited(0)).ok());

  Status failed =
      CheckExit(cmd, ProcessResult::Exited(1, "", "warning: x\n  error: disk full \n\n"));
  EXPECT_EQ(failed.code(), Code::kUnknown);
  EXPECT_EQ(failed.message(), "qemu-img exited with 1: error: disk full");

  ProcessResult slow = ProcessResult::Signaled(SIGKILL);
  slow.timed_out = true;
  EXPECT_EQ(CheckExit(cmd, slow).code(), Code::kDeadlineExceeded);
}

// ---------------------------------------------------------------------------------------------
// FindProgram.

TEST(FindProgramTest, SearchesPathInOrder) {
  StatusOr<std::string> sh = FindProgram("sh", "/nonexistent:/bin:/usr/bin");
  ASSERT_TRUE(sh.ok()) << sh.status();
  EXPECT_EQ(*sh, "/bin/sh");
}

TEST(FindProgramTest, SkipsEmptyEntriesDirectoriesAndNonExecutables) {
  TempDir dir;
  ASSERT_EQ(::mkdir((dir / "a").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((dir / "a/tool").c_str(), 0755), 0);  // a directory named like it
  ASSERT_EQ(::mkdir((dir / "b").c_str(), 0755), 0);
  WriteFile(dir / "b/tool", "#!/bin/sh\n", 0644);  // not executable
  ASSERT_EQ(::mkdir((dir / "c").c_str(), 0755), 0);
  WriteFile(dir / "c/tool", "#!/bin/sh\n", 0755);

  StatusOr<std::string> found =
      FindProgram("tool", "::" + (dir / "a") + ":" + (dir / "b") + "::" + (dir / "c") + "/");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, dir / "c/tool");
}

TEST(FindProgramTest, PathWithSlashIsReturnedAsIs) {
  StatusOr<std::string> sh = FindProgram("/bin/sh", "");
  ASSERT_TRUE(sh.ok()) << sh.status();
  EXPECT_EQ(*sh, "/bin/sh");
}

TEST(FindProgramTest, MissingProgramIsNotFound) {
  StatusOr<std::string> found = FindProgram("fun-no-such-program", "/nonexistent:/bin");
  EXPECT_EQ(found.status().code(), Code::kNotFound);
  EXPECT_THAT(found.status().message(),
              HasSubstr("fun-no-such-program: not found in PATH (/nonexistent:/bin)"));

  EXPECT_EQ(FindProgram("/nonexistent/prog", "/bin").status().code(), Code::kNotFound);
  EXPECT_EQ(FindProgram("fun-no-such-program", "").status().code(), Code::kNotFound);
}

TEST(FindProgramTest, OnlyNonExecutableMatchIsPermissionDenied) {
  TempDir dir;
  WriteFile(dir / "tool", "#!/bin/sh\n", 0644);
  StatusOr<std::string> found = FindProgram("tool", dir.path());
  EXPECT_EQ(found.status().code(), Code::kPermissionDenied);
  EXPECT_THAT(found.status().message(), HasSubstr("not executable"));

  EXPECT_EQ(FindProgram(dir / "tool", "").status().code(), Code::kPermissionDenied);
  EXPECT_EQ(FindProgram(dir.path(), "").status().code(), Code::kPermissionDenied);  // a dir
}

TEST(FindProgramTest, EmptyNameIsInvalid) {
  EXPECT_EQ(FindProgram("", "/bin").status().code(), Code::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// BoostProcessRunner: Run.

class RunTest : public ::testing::Test {
 protected:
  StatusOr<ProcessResult> Run(const Command& cmd) { return runner_.Run(cmd); }
  BoostProcessRunner runner_;
};

TEST_F(RunTest, TrueSucceeds) {
  StatusOr<ProcessResult> r = Run(Cmd("/bin/true"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok());
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->term_signal, 0);
  EXPECT_FALSE(r->timed_out);
  EXPECT_EQ(r->stdout_data, "");
}

TEST_F(RunTest, FalseExitsWithOneWithoutAnErrorStatus) {
  StatusOr<ProcessResult> r = Run(Cmd("false"));  // found in PATH
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->ok());
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_EQ(r->Describe(), "exited with 1");
}

TEST_F(RunTest, ExitCodeIsDecoded) {
  StatusOr<ProcessResult> r = Run(Sh("exit 7"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 7);
  EXPECT_EQ(r->term_signal, 0);
}

TEST_F(RunTest, DeathBySignalIsDecoded) {
  StatusOr<ProcessResult> r = Run(Sh("kill -KILL $$"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, -1);
  EXPECT_EQ(r->term_signal, SIGKILL);
  EXPECT_FALSE(r->timed_out);
  EXPECT_EQ(r->Describe(), "killed by signal 9 (SIGKILL)");
}

TEST_F(RunTest, CapturesStdoutAndStderrSeparately) {
  StatusOr<ProcessResult> r = Run(Sh("echo out; echo err >&2; echo more"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_data, "out\nmore\n");
  EXPECT_EQ(r->stderr_data, "err\n");
}

TEST_F(RunTest, FeedsStdin) {
  Command cmd = Cmd("cat");
  cmd.stdin_data = "hello\nworld";
  StatusOr<ProcessResult> r = Run(cmd);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_data, "hello\nworld");
}

TEST_F(RunTest, StdinIsDevNullByDefault) {
  StatusOr<ProcessResult> r = Run(Cmd("cat"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok());
  EXPECT_EQ(r->stdout_data, "");
}

TEST_F(RunTest, ChildThatIgnoresStdinDoesNotBreakUs) {
  Command cmd = Cmd("true");
  cmd.stdin_data = std::string(4 << 20, 'x');  // more than any pipe buffer: EPIPE, no SIGPIPE
  StatusOr<ProcessResult> r = Run(cmd);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok());
}

TEST_F(RunTest, LargeStdinAndStdoutFlowAtOnce) {
  std::string data(3 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + i / 4096);
  Command cmd = Cmd("cat");
  cmd.stdin_data = data;
  StatusOr<ProcessResult> r = Run(cmd);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->stdout_data.size(), data.size());
  EXPECT_TRUE(r->stdout_data == data);
}

TEST_F(RunTest, BigOutputOnBothStreamsIsNotDeadlocked) {
  auto start = std::chrono::steady_clock::now();
  StatusOr<ProcessResult> r =
      Run(Sh("head -c 2000000 /dev/zero; head -c 1500000 /dev/zero >&2; echo done"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok());
  EXPECT_EQ(r->stdout_data.size(), 2000000u + 5);
  EXPECT_EQ(r->stderr_data.size(), 1500000u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, kHangGuard);
}

TEST_F(RunTest, HeadOfDevZeroIsCapturedInFull) {
  StatusOr<ProcessResult> r = Run(Cmd("head", {"-c", "2000000", "/dev/zero"}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_data, std::string(2000000, '\0'));
}

TEST_F(RunTest, EnvironmentOverridesAreAddedToTheInheritedOne) {
  Command cmd = Sh("echo \"$FOO\"; echo \"$HOME\"; test -n \"$PATH\" && echo has-path");
  cmd.env_overrides = {{"FOO", "bar baz"}, {"HOME", "/nowhere"}};
  StatusOr<ProcessResult> r = Run(cmd);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_data, "bar baz\n/nowhere\nhas-path\n");
}

TEST_F(RunTest, PathOverrideIsUsedForLookup) {
  TempDir dir;
  WriteFile(dir / "fun-test-tool", "#!/bin/sh\necho from-tool\n", 0755);
  Command cmd = Cmd("fun-test-tool");
  cmd.env_overrides = {{"PATH", dir.path() + ":/usr/bin:/bin"}};
  StatusOr<ProcessResult> r = Run(cmd);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_data, "from-tool\n");
}

TEST_F(RunTest, WorkingDirIsHonoured) {
  TempDir dir;
  Command cmd = Cmd("pwd", {"-P"});
  cmd.working_dir = dir.path();
  StatusOr<ProcessResult> r = Run(cmd);
  ASSERT_TRUE(r.ok()) << r.status();
  char real[PATH_MAX];
  ASSERT_NE(::realpath(dir.path().c_str(), real), nullptr);
  EXPECT_EQ(r->stdout_data, std::string(real) + "\n");
}

TEST_F(RunTest, RelativeProgramIsResolvedInWorkingDir) {
  TempDir dir;
  WriteFile(dir / "tool", "#!/bin/sh\necho ran\n", 0755);
  Command cmd = Cmd("./tool");
  cmd.working_dir = dir.path();
  StatusOr<ProcessResult> r = Run(cmd);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_data, "ran\n");
}

TEST_F(RunTest, MissingWorkingDirIsNotFound) {
  Command cmd = Cmd("pwd");
  cmd.working_dir = "/nonexistent/fun-dir";
  StatusOr<ProcessResult> r = Run(cmd);
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_THAT(r.status().message(),
              StartsWith("starting pwd: working directory /nonexistent/fun-dir: "));
}

TEST_F(RunTest, ArgumentsArePassedVerbatim) {
  StatusOr<ProcessResult> r = Run(Cmd("printf", {"[%s][%s][%s]", "", "$HOME;*", "a b"}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_data, "[][$HOME;*][a b]");
}

TEST_F(RunTest, NulByteInArgumentIsInvalid) {
  StatusOr<ProcessResult> r = Run(Cmd("echo", {std::string("a\0b", 3)}));
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("argument 1 contains a NUL byte"));
}

TEST_F(RunTest, TimeoutStopsTheChild) {
  auto start = std::chrono::steady_clock::now();
  Command cmd = Cmd("sleep", {"30"});
  cmd.timeout = 200ms;
  StatusOr<ProcessResult> r = Run(cmd);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->timed_out);
  EXPECT_FALSE(r->ok());
  EXPECT_EQ(r->term_signal, SIGTERM);
  EXPECT_THAT(r->Describe(), StartsWith("timed out after "));
  EXPECT_LT(std::chrono::steady_clock::now() - start, kHangGuard);
}

TEST_F(RunTest, ChildIgnoringSigtermIsKilledAfterTheGrace) {
  auto start = std::chrono::steady_clock::now();
  // `exec` so the child itself ignores SIGTERM (the timeout leaves it 1 s to set the trap).
  Command cmd = Sh("trap '' TERM; exec sleep 30");
  cmd.timeout = 1000ms;
  cmd.kill_grace = 200ms;
  StatusOr<ProcessResult> r = Run(cmd);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->timed_out);
  EXPECT_EQ(r->term_signal, SIGKILL);
  EXPECT_EQ(r->exit_code, -1);
  EXPECT_LT(std::chrono::steady_clock::now() - start, kHangGuard);
}

TEST_F(RunTest, NewProcessGroupTimeoutKillsGrandchildrenToo) {
  auto start = std::chrono::steady_clock::now();
  // dash forks `sleep` here (a trap is set), so the sleep is a grandchild ignoring SIGTERM.
  Command cmd = Sh("trap \"\" TERM; sleep 30");
  cmd.timeout = 1000ms;
  cmd.kill_grace = 200ms;
  cmd.new_process_group = true;
  StatusOr<ProcessResult> r = Run(cmd);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->timed_out);
  EXPECT_EQ(r->term_signal, SIGKILL);
  EXPECT_LT(std::chrono::steady_clock::now() - start, kHangGuard);
}

TEST_F(RunTest, GrandchildHoldingThePipesDoesNotBlockRun) {
  auto start = std::chrono::steady_clock::now();
  StatusOr<ProcessResult> r = Run(Sh("sleep 30 & echo $!"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, kHangGuard);
  pid_t grandchild = std::atoi(r->stdout_data.c_str());
  ASSERT_GT(grandchild, 1);
  ::kill(grandchild, SIGKILL);  // not ours to reap: PID 1 (or a subreaper) is its parent now
}

TEST_F(RunTest, NonexistentProgramIsNotFound) {
  StatusOr<ProcessResult> r = Run(Cmd("fun-no-such-program-xyz"));
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_THAT(r.status().message(),
              StartsWith("starting fun-no-such-program-xyz: not found in PATH"));

  r = Run(Cmd("/nonexistent/fun-prog"));
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_THAT(r.status().message(), StartsWith("starting /nonexistent/fun-prog: "));
}

TEST_F(RunTest, NonExecutableFileIsPermissionDenied) {
  TempDir dir;
  WriteFile(dir / "script", "#!/bin/sh\necho hi\n", 0644);
  StatusOr<ProcessResult> r = Run(Cmd(dir / "script"));
  EXPECT_EQ(r.status().code(), Code::kPermissionDenied);
  EXPECT_THAT(r.status().message(), StartsWith("starting " + (dir / "script") + ": "));
}

TEST_F(RunTest, ExecFailureIsAnErrorStatus) {
  TempDir dir;
  WriteFile(dir / "binary",
            std::string("\x7f"
                        "ELFgarbage",
                        10),
            0755);  // execve: ENOEXEC
  StatusOr<ProcessResult> r = Run(Cmd(dir / "binary"));
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), StartsWith("starting " + (dir / "binary") + ": "));
  // The child that failed to exec was reaped: this test process has no child left.
  siginfo_t info;
  std::memset(&info, 0, sizeof info);
  EXPECT_EQ(::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT), -1);
  EXPECT_EQ(errno, ECHILD);
}

TEST_F(RunTest, OutputFilesAreAppendedTo) {
  TempDir dir;
  std::string log = dir / "hostd.log";
  for (const char* word : {"one", "two"}) {
    Command cmd = Sh(std::string("echo ") + word + "; echo " + word + "-err >&2");
    cmd.stdout_file = log;
    cmd.stderr_file = log;
    StatusOr<ProcessResult> r = Run(cmd);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->stdout_data, "");
    EXPECT_EQ(r->stderr_data, "");
  }
  EXPECT_EQ(ReadFile(log), "one\none-err\ntwo\ntwo-err\n");
  struct stat st {};
  ASSERT_EQ(::stat(log.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(RunTest, UnopenableOutputFileFailsToStart) {
  Command cmd = Cmd("true");
  cmd.stdout_file = "/nonexistent/dir/out.log";
  StatusOr<ProcessResult> r = Run(cmd);
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_THAT(r.status().message(),
              StartsWith("starting true: opening stdout file /nonexistent/dir/out.log"));
}

TEST_F(RunTest, UncapturedOutputIsNotInTheResult) {
  Command cmd = Sh("exit 3");
  cmd.capture_output = false;
  StatusOr<ProcessResult> r = Run(cmd);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->stdout_data, "");
}

TEST_F(RunTest, ChildInheritsOnlyStdio) {
  if (::access("/proc/self/fd", R_OK) != 0) GTEST_SKIP() << "no /proc";
  int leaky[2];
  ASSERT_EQ(::pipe(leaky), 0);  // deliberately without close-on-exec
  StatusOr<ProcessResult> r = Run(Sh("ls /proc/$$/fd"));
  ::close(leaky[0]);
  ::close(leaky[1]);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_data, "0\n1\n2\n");
}

TEST_F(RunTest, ManyThreadsRunAtOnce) {
  auto start = std::chrono::steady_clock::now();
  constexpr int kThreads = 8;
  constexpr int kRuns = 10;
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRuns; ++i) {
        std::string word = std::to_string(t) + "-" + std::to_string(i);
        StatusOr<ProcessResult> r = Run(Cmd("sh", {"-c", "echo \"$0\"", word}));
        if (r.ok() && r->ok() && r->stdout_data == word + "\n") ++good;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(good.load(), kThreads * kRuns);
  EXPECT_LT(std::chrono::steady_clock::now() - start, kHangGuard);
}

TEST(DefaultRunnerTest, RunsRealPrograms) {
  StatusOr<ProcessResult> r = ProcessRunner::Default().Run(Cmd("echo", {"hi"}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_data, "hi\n");
}

// ---------------------------------------------------------------------------------------------
// BoostProcessRunner: Start.

class StartTest : public ::testing::Test {
 protected:
  std::unique_ptr<Process> Start(Command cmd) {
    StatusOr<std::unique_ptr<Process>> p = runner_.Start(cmd);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *std::move(p) : nullptr;
  }
  BoostProcessRunner runner_;
};

TEST_F(StartTest, RunningUntilTerminated) {
  Command cmd = Cmd("sleep", {"30"});
  cmd.capture_output = false;
  std::unique_ptr<Process> p = Start(cmd);
  ASSERT_NE(p, nullptr);
  pid_t pid = p->pid();
  EXPECT_GT(pid, 0);
  EXPECT_TRUE(p->Running());

  ASSERT_TRUE(p->Terminate(5s).ok());
  EXPECT_FALSE(p->Running());
  StatusOr<ProcessResult> r = p->Wait(0ms);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->term_signal, SIGTERM);
  EXPECT_FALSE(r->timed_out);
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);

  EXPECT_TRUE(p->Terminate(5s).ok());  // again: already exited
  EXPECT_EQ(p->Signal(SIGTERM).code(), Code::kFailedPrecondition);
}

#ifdef __linux__
TEST_F(StartTest, ParentDeathSignalArrivesWhenTheStartingThreadEnds) {
  // fun-hostd's QEMU: it must not outlive the process serving its shares.
  Command cmd = Cmd("sleep", {"30"});
  cmd.capture_output = false;
  cmd.parent_death_signal = SIGTERM;
  std::unique_ptr<Process> p;
  std::thread starter([&] { p = Start(cmd); });
  starter.join();  // the "parent" (the starting thread) is gone
  ASSERT_NE(p, nullptr);
  StatusOr<ProcessResult> r = p->Wait(10s);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->term_signal, SIGTERM);

  // Without it, the same child keeps running.
  cmd.parent_death_signal = 0;
  std::thread starter2([&] { p = Start(cmd); });
  starter2.join();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->Wait(300ms).status().code(), Code::kDeadlineExceeded);
}
#endif

TEST_F(StartTest, WaitTimeoutLeavesChildRunningAndDestructorKillsIt) {
  std::unique_ptr<Process> p = Start(Cmd("sleep", {"30"}));
  ASSERT_NE(p, nullptr);
  pid_t pid = p->pid();

  StatusOr<ProcessResult> r = p->Wait(100ms);
  EXPECT_EQ(r.status().code(), Code::kDeadlineExceeded);
  EXPECT_THAT(r.status().message(), HasSubstr("still running"));
  EXPECT_TRUE(p->Running());
  EXPECT_EQ(::kill(pid, 0), 0);

  p.reset();  // kills and reaps
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

TEST_F(StartTest, WaitReturnsCapturedOutputAndIsRepeatable) {
  std::unique_ptr<Process> p = Start(Sh("echo hi; echo oops >&2; exit 2"));
  ASSERT_NE(p, nullptr);
  StatusOr<ProcessResult> r = p->Wait(std::nullopt);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2);
  EXPECT_EQ(r->stdout_data, "hi\n");
  EXPECT_EQ(r->stderr_data, "oops\n");
  EXPECT_FALSE(p->Running());

  StatusOr<ProcessResult> again = p->Wait(0ms);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->exit_code, 2);
  EXPECT_EQ(again->stdout_data, "hi\n");
}

TEST_F(StartTest, SignalIsDelivered) {
  std::unique_ptr<Process> p = Start(Cmd("sleep", {"30"}));
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(p->Signal(SIGUSR1).ok());
  StatusOr<ProcessResult> r = p->Wait(std::nullopt);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->term_signal, SIGUSR1);
  EXPECT_EQ(r->Describe(), "killed by signal " + std::to_string(SIGUSR1) + " (SIGUSR1)");
}

TEST_F(StartTest, StartingAMissingProgramIsNotFound) {
  StatusOr<std::unique_ptr<Process>> p = runner_.Start(Cmd("fun-no-such-program-xyz"));
  EXPECT_EQ(p.status().code(), Code::kNotFound);
}

TEST_F(StartTest, NewProcessGroupTerminateReachesTheWholeGroup) {
  TempDir dir;
  std::string pid_file = dir / "grandchild.pid";
  Command cmd = Sh("sleep 30 & echo $! > '" + pid_file + ".tmp'; mv '" + pid_file + ".tmp' '" +
                   pid_file + "'; wait");
  cmd.new_process_group = true;
  cmd.capture_output = false;
  std::unique_ptr<Process> p = Start(cmd);
  ASSERT_NE(p, nullptr);
  ASSERT_TRUE(Eventually([&] { return ::access(pid_file.c_str(), F_OK) == 0; }));
  pid_t grandchild = std::atoi(ReadFile(pid_file).c_str());
  ASSERT_GT(grandchild, 1);
  EXPECT_EQ(::getpgid(grandchild), p->pid());

  ASSERT_TRUE(p->Terminate(5s).ok());
  EXPECT_TRUE(Eventually([&] { return IsDead(grandchild); }));
}

// ---------------------------------------------------------------------------------------------
// FakeProcessRunner.

TEST(FakeProcessRunnerTest, UnscriptedProgramIsNotFound) {
  FakeProcessRunner runner;
  StatusOr<ProcessResult> r = runner.Run(Cmd("qemu-system-x86_64", {"-m", "512"}));
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_EQ(r.status().message(), "no fake registered for qemu-system-x86_64");
  ASSERT_EQ(runner.calls().size(), 1u);
  EXPECT_THAT(runner.calls()[0].args, ElementsAre("-m", "512"));
}

TEST(FakeProcessRunnerTest, ReturnsScriptedResultAndRecordsCalls) {
  FakeProcessRunner runner;
  runner.Expect("qemu-img").Returns(ProcessResult::Exited(0, "created\n"));
  Command cmd = Cmd("qemu-img", {"create", "-f", "raw", "disk.img", "8G"});
  cmd.env_overrides = {{"TMPDIR", "/x"}};
  StatusOr<ProcessResult> r = runner.Run(cmd);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok());
  EXPECT_EQ(r->stdout_data, "created\n");
  ASSERT_EQ(runner.calls().size(), 1u);
  EXPECT_EQ(runner.calls()[0].ToString(), "qemu-img create -f raw disk.img 8G");
  EXPECT_EQ(runner.calls()[0].env_overrides.at("TMPDIR"), "/x");
}

TEST(FakeProcessRunnerTest, DefaultActionExitsZero) {
  FakeProcessRunner runner;
  runner.Expect("true");
  StatusOr<ProcessResult> r = runner.Run(Cmd("true"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok());
}

TEST(FakeProcessRunnerTest, FailsWithScriptedStatus) {
  FakeProcessRunner runner;
  runner.Expect("mkfs.ext4").Fails(PermissionDeniedError("starting mkfs.ext4: denied"));
  StatusOr<ProcessResult> r = runner.Run(Cmd("mkfs.ext4"));
  EXPECT_EQ(r.status(), PermissionDeniedError("starting mkfs.ext4: denied"));
  EXPECT_EQ(runner.Start(Cmd("mkfs.ext4")).status().code(), Code::kPermissionDenied);
}

TEST(FakeProcessRunnerTest, MatchesProgramByNameOrBasename) {
  FakeProcessRunner runner;
  runner.Expect("qemu-img").Returns(ProcessResult::Exited(0));
  runner.Expect("/opt/bin/tool").Returns(ProcessResult::Exited(0));
  EXPECT_TRUE(runner.Run(Cmd("/usr/bin/qemu-img")).ok());
  EXPECT_TRUE(runner.Run(Cmd("/opt/bin/tool")).ok());
  EXPECT_EQ(runner.Run(Cmd("tool")).status().code(), Code::kNotFound);
  EXPECT_EQ(runner.Run(Cmd("qemu-img-extra")).status().code(), Code::kNotFound);
}

TEST(FakeProcessRunnerTest, WithArgsAndWhenSelectAnExpectation) {
  FakeProcessRunner runner;
  runner.Expect("ip").WithArgs({"link", "show"}).Returns(ProcessResult::Exited(1));
  runner.Expect("ip")
      .When([](const Command& c) { return c.env_overrides.count("NETNS") != 0; })
      .Returns(ProcessResult::Exited(2));
  runner.Expect("ip").Returns(ProcessResult::Exited(0));

  EXPECT_EQ(runner.Run(Cmd("ip", {"link", "show"}))->exit_code, 1);
  Command netns = Cmd("ip", {"addr"});
  netns.env_overrides["NETNS"] = "x";
  EXPECT_EQ(runner.Run(netns)->exit_code, 2);
  EXPECT_EQ(runner.Run(Cmd("ip", {"addr"}))->exit_code, 0);
}

TEST(FakeProcessRunnerTest, TimesMakesSequences) {
  FakeProcessRunner runner;
  auto& first = runner.Expect("curl").Times(1).Fails(UnavailableError("starting curl: busy"));
  auto& then = runner.Expect("curl").Returns(ProcessResult::Exited(0));
  EXPECT_EQ(runner.Run(Cmd("curl")).status().code(), Code::kUnavailable);
  EXPECT_TRUE(runner.Run(Cmd("curl")).ok());
  EXPECT_TRUE(runner.Run(Cmd("curl")).ok());
  EXPECT_EQ(first.call_count(), 1);
  EXPECT_EQ(then.call_count(), 2);
}

TEST(FakeProcessRunnerTest, StartOfAReturnsExpectationHasAlreadyEnded) {
  FakeProcessRunner runner;
  runner.Expect("echo").Returns(ProcessResult::Exited(4, "x"));
  StatusOr<std::unique_ptr<Process>> p = runner.Start(Cmd("echo"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE((*p)->Running());
  StatusOr<ProcessResult> r = (*p)->Wait(0ms);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 4);
  EXPECT_EQ(r->stdout_data, "x");
}

TEST(FakeProcessRunnerTest, StartsRunningUntilTheTestEndsIt) {
  FakeProcessRunner runner;
  runner.Expect("qemu-system-x86_64").StartsRunning();
  StatusOr<ProcessResult> seen = InternalError("not run");
  std::thread supervisor([&] {
    StatusOr<std::unique_ptr<Process>> p = runner.Start(Cmd("qemu-system-x86_64"));
    if (!p.ok()) {
      seen = p.status();
      return;
    }
    seen = (*p)->Wait(std::nullopt);
  });
  StatusOr<std::shared_ptr<FakeProcess>> qemu =
      runner.WaitForStart("qemu-system-x86_64", milliseconds(kHangGuard));
  ASSERT_TRUE(qemu.ok()) << qemu.status();
  EXPECT_TRUE((*qemu)->Running());
  (*qemu)->Exit(1, "", "qemu: could not open /dev/kvm");
  supervisor.join();
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(seen->exit_code, 1);
  EXPECT_EQ(seen->stderr_data, "qemu: could not open /dev/kvm");
  EXPECT_EQ(runner.started().size(), 1u);
}

TEST(FakeProcessRunnerTest, WithPidHandsOutThatPid) {
  FakeProcessRunner runner;
  runner.Expect("qemu-system-x86_64").WithPid(4242).StartsRunning();
  runner.Expect("other").StartsRunning();
  StatusOr<std::unique_ptr<Process>> a = runner.Start(Cmd("qemu-system-x86_64"));
  StatusOr<std::unique_ptr<Process>> b = runner.Start(Cmd("other"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->pid(), 4242);
  EXPECT_EQ(runner.started()[0]->pid(), 4242);
  EXPECT_NE((*b)->pid(), 4242);  // the others keep made-up pids
}

TEST(FakeProcessRunnerTest, WaitForStartTimesOut) {
  FakeProcessRunner runner;
  EXPECT_EQ(runner.WaitForStart("qemu", 10ms).status().code(), Code::kDeadlineExceeded);
}

TEST(FakeProcessRunnerTest, RunTimeoutTerminatesARunningFake) {
  FakeProcessRunner runner;
  runner.Expect("slow").StartsRunning();
  Command cmd = Cmd("slow");
  cmd.timeout = 20ms;
  StatusOr<ProcessResult> r = runner.Run(cmd);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->timed_out);
  EXPECT_EQ(r->term_signal, SIGTERM);
  ASSERT_EQ(runner.started().size(), 1u);
  EXPECT_THAT(runner.started()[0]->signals(), ElementsAre(SIGTERM));
}

TEST(FakeProcessRunnerTest, IgnoredSigtermEscalatesToSigkill) {
  FakeProcessRunner runner;
  runner.Expect("stubborn").StartsRunning();
  StatusOr<std::unique_ptr<Process>> p = runner.Start(Cmd("stubborn"));
  ASSERT_TRUE(p.ok()) << p.status();
  StatusOr<std::shared_ptr<FakeProcess>> fake = runner.WaitForStart("stubborn", 0ms);
  ASSERT_TRUE(fake.ok()) << fake.status();
  (*fake)->IgnoreSignal(SIGTERM);

  ASSERT_TRUE((*p)->Terminate(10ms).ok());
  StatusOr<ProcessResult> r = (*p)->Wait(0ms);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->term_signal, SIGKILL);
  EXPECT_THAT((*fake)->signals(), ElementsAre(SIGTERM, SIGKILL));
  EXPECT_EQ((*p)->Signal(SIGTERM).code(), Code::kFailedPrecondition);
}

TEST(FakeProcessRunnerTest, HarmlessSignalsDoNotEndIt) {
  FakeProcessRunner runner;
  runner.Expect("vm").StartsRunning();
  StatusOr<std::unique_ptr<Process>> p = runner.Start(Cmd("vm"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE((*p)->Signal(0).ok());
  EXPECT_TRUE((*p)->Signal(SIGWINCH).ok());
  EXPECT_TRUE((*p)->Running());
  EXPECT_EQ((*p)->Wait(1ms).status().code(), Code::kDeadlineExceeded);
}

TEST(FakeProcessRunnerTest, DroppingTheHandleKillsARunningFake) {
  FakeProcessRunner runner;
  runner.Expect("vm").StartsRunning();
  StatusOr<std::unique_ptr<Process>> p = runner.Start(Cmd("vm"));
  ASSERT_TRUE(p.ok()) << p.status();
  std::shared_ptr<FakeProcess> fake = runner.started().at(0);
  *p = nullptr;
  EXPECT_FALSE(fake->Running());
  EXPECT_THAT(fake->signals(), ElementsAre(SIGKILL));
  EXPECT_EQ(fake->Wait(0ms)->term_signal, SIGKILL);
}

TEST(FakeProcessRunnerTest, IsSafeToUseFromManyThreads) {
  FakeProcessRunner runner;
  auto& echo = runner.Expect("echo").Returns(ProcessResult::Exited(0, "hi"));
  constexpr int kThreads = 8;
  constexpr int kRuns = 50;
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kRuns; ++i) {
        StatusOr<ProcessResult> r = runner.Run(Cmd("echo"));
        if (r.ok() && r->stdout_data == "hi") ++good;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(good.load(), kThreads * kRuns);
  EXPECT_EQ(echo.call_count(), kThreads * kRuns);
  EXPECT_EQ(runner.calls().size(), static_cast<size_t>(kThreads * kRuns));
}

}  // namespace
}  // namespace fun

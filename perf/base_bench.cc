// Costs of lib/base on hot paths, each beside its plain peer:
//   - a log line to a file through fun::log vs a bare fprintf of the same text (the peer);
//   - a disabled FUN_LOG (must cost next to nothing: hot paths log at debug);
//   - StatusOr<int> on success vs returning a plain int.
// Run: build/perf/base_bench   (ratios: compare the pairs' times in one run)
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "lib/base/log.h"
#include "lib/base/status.h"

namespace {

std::string TempLogPath() {
  return std::string("/tmp/fun-base-bench-") + std::to_string(::getpid()) + ".log";
}

void BM_FunLogToFile(benchmark::State& state) {
  fun::log::Logger logger;
  logger.SetStderrLevel(fun::log::Level::kOff);
  std::string path = TempLogPath();
  if (!logger.OpenFile(path, fun::log::Level::kInfo).ok()) {
    state.SkipWithError("cannot open log file");
    return;
  }
  int i = 0;
  for (auto _ : state) {
    logger.Write(fun::log::Level::kInfo, __FILE__, __LINE__,
                 fmt::format("connection {} accepted from 127.0.0.1:{}", i, 40000 + i));
    ++i;
  }
  logger.CloseFile();
  std::remove(path.c_str());
}
BENCHMARK(BM_FunLogToFile);

void BM_PeerFprintfToFile(benchmark::State& state) {
  std::string path = TempLogPath() + ".peer";
  std::FILE* f = std::fopen(path.c_str(), "a");
  std::setvbuf(f, nullptr, _IOLBF, 0);
  int i = 0;
  for (auto _ : state) {
    std::fprintf(f,
                 "2026-01-01T00:00:00.000Z I %d bench.cc:1] connection %d accepted from "
                 "127.0.0.1:%d\n",
                 1, i, 40000 + i);
    ++i;
  }
  std::fclose(f);
  std::remove(path.c_str());
}
BENCHMARK(BM_PeerFprintfToFile);

void BM_DisabledLog(benchmark::State& state) {
  fun::log::Default().SetStderrLevel(fun::log::Level::kWarning);
  int i = 0;
  for (auto _ : state) {
    FUN_LOG(Debug, "frame {} of {} bytes", i, i * 2);
    benchmark::DoNotOptimize(++i);
  }
}
BENCHMARK(BM_DisabledLog);

__attribute__((noinline)) fun::StatusOr<int> ParseOk(int x) {
  if (x < 0) return fun::InvalidArgumentError("negative");
  return x + 1;
}
__attribute__((noinline)) int PlainOk(int x) { return x < 0 ? -1 : x + 1; }

void BM_StatusOrSuccess(benchmark::State& state) {
  int x = 0;
  for (auto _ : state) {
    auto r = ParseOk(x);
    x = *r & 0xffff;
    benchmark::DoNotOptimize(x);
  }
}
BENCHMARK(BM_StatusOrSuccess);

void BM_PeerPlainInt(benchmark::State& state) {
  int x = 0;
  for (auto _ : state) {
    x = PlainOk(x) & 0xffff;
    benchmark::DoNotOptimize(x);
  }
}
BENCHMARK(BM_PeerPlainInt);

}  // namespace

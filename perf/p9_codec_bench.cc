// The 9P codec's cost per message, on the messages that dominate real traffic: the Linux
// client's walk+getattr+clunk per stat, Twrite/Rread payloads (which the codec must not copy
// on decode), and Rreaddir packing. The side-by-side peer comparison of the whole server is
// perf/p9_vs_diod.sh; this suite shows whether the codec is ever the bottleneck there.
// Run: build/perf/p9_codec_bench
#include <benchmark/benchmark.h>

#include <string>

#include "lib/p9/codec.h"

namespace {

using namespace fun::p9;

void BM_EncodeRgetattr(benchmark::State& state) {
  Rgetattr r;
  r.valid = kGetattrBasic;
  r.qid = {kQidFile, 1, 1234};
  r.size = 4096;
  std::string out;
  for (auto _ : state) {
    out.clear();
    benchmark::DoNotOptimize(Encode(7, r, &out));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EncodeRgetattr);

void BM_DecodeTwalk(benchmark::State& state) {
  std::string wire;
  (void)Encode(7, Twalk{.fid = 1, .newfid = 2, .wnames = {"usr", "share", "doc"}}, &wire);
  for (auto _ : state) {
    auto f = Decode(wire);
    benchmark::DoNotOptimize(f);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DecodeTwalk);

void BM_DecodeTwrite(benchmark::State& state) {
  std::string payload(static_cast<size_t>(state.range(0)), 'x');
  std::string wire;
  (void)Encode(7, Twrite{.fid = 1, .offset = 0, .data = {payload}}, &wire);
  for (auto _ : state) {
    auto f = Decode(wire);
    benchmark::DoNotOptimize(f);
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_DecodeTwrite)->Arg(4096)->Arg(256 * 1024);

void BM_PackDirents(benchmark::State& state) {
  std::string data;
  for (auto _ : state) {
    data.clear();
    DirentWriter w(&data, 256 * 1024);
    uint64_t i = 0;
    while (w.Add(Qid{kQidFile, 0, i}, i + 1, 8, "some-file-name.txt")) ++i;
    benchmark::DoNotOptimize(data);
    state.counters["entries"] = static_cast<double>(i);
  }
}
BENCHMARK(BM_PackDirents);

}  // namespace

// pull_progress.h: a progress bar for an image pull, with bytes and layers, taken from
// containerd's content service while CRI PullImage blocks.
//
// CRI's PullImage says nothing until the image is in the store. containerd's own content
// service (content.v1 Content.ListStatuses, namespace "k8s.io" for CRI's images) lists the
// downloads in progress ("ingests": ref, offset, total, started/updated). PullProgress polls it
// every ~100 ms on a thread of its own, through the same unix socket as CRI (a VM instance's
// containerd.sock relays the bytes of every gRPC service of the guest's containerd, not only
// CRI), aggregates the ingests into a PullSnapshot and draws one line:
//
//   ⠹ pulling 127.0.0.1:5000/fun/layers:test [=========>          ] 3.1/6.3MB  1/3 layers  0.8s
//
// When output is not a terminal it prints a plain line each time the layer counts change (like
// Spinner prints each new phase once). Where containerd's content service cannot be used (the
// build found no containerd protos, or the endpoint answers Unimplemented, or does not answer)
// the line is a spinner, silently: progress is a nicety, never a reason to fail a pull.
//
//   cri::PullProgress progress(socket, ref, std::cerr, IsTerminal(2));
//   auto id = cri->PullImage(ref);
//   cri::PullSnapshot last = progress.Finish("");     // "3/3 layers, 6.3MB" in last.Describe()
//
// The pieces are apart so tests reach each: IngestTracker (pure aggregation), RenderPullLine
// (pure: a snapshot and a width in, a line out), IngestSource (the content service, or a fake).
//
// Thread-safety: IngestTracker and the render functions are plain values/functions (one thread).
// A PullProgress is driven by one thread (construct, Finish); it polls on a thread it owns.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "lib/base/clock.h"
#include "lib/base/status.h"

namespace fun::cri {

// The containerd namespace CRI keeps its images (and their downloads) in.
inline constexpr std::string_view kCriContainerdNamespace = "k8s.io";

// Whether this build has containerd's content service protos (FUN_HAVE_CONTAINERD_CONTENT):
// without them every IngestSource answers Unimplemented and progress is a spinner.
bool ContentServiceCompiledIn();

// One download in progress (content.v1 Status).
struct Ingest {
  // containerd's ingest key: "layer-sha256:...", "manifest-sha256:...", "config-sha256:...",
  // "index-sha256:..." (remotes.MakeRefKey); only "layer-" ones count as layers.
  std::string ref;
  int64_t offset = 0;  // bytes written so far
  int64_t total = 0;   // expected size (the descriptor's; 0 when unknown)
  int64_t started_at_ns = 0;
  int64_t updated_at_ns = 0;
};

// True for the ingest of a layer ("layer-" prefix).
bool IsLayerIngest(std::string_view ref);

// What one pull looks like so far. Counts only layers: manifests and configs are small and
// come and go between two polls.
struct PullSnapshot {
  bool from_content = false;  // the content service answered at least once
  int layers_seen = 0;        // layer downloads seen during this pull
  int layers_done = 0;        // of those, the ones that finished (their ingest is gone)
  uint64_t bytes_done = 0;    // layers: bytes downloaded (finished ones count in full)
  uint64_t bytes_total = 0;   // layers: sum of the sizes of the layers seen
  int polls = 0;              // answered polls

  // "2/3 layers, 3.1/6.3MB"; "resolving" when no layer was seen yet.
  std::string Describe() const;
};

// Turns a sequence of ListStatuses answers into a PullSnapshot.
//
// containerd lists an ingest only while it downloads and deletes it when the blob is committed
// (a failed download stays, to be resumed). So a ref is tracked from the first answer that lists
// it and counted done (with all of its bytes) when a later answer no longer lists it. Layers
// already in the store are never downloaded, so they are never seen: the totals are of what
// this pull fetched. Ingests listed by the first answer (the Baseline) belong to someone else
// (another pull, or a failed one left behind) unless they move: they are ignored until their
// offset or update time changes.
class IngestTracker {
 public:
  // The ingests there before the pull started.
  void Baseline(const std::vector<Ingest>& ingests);
  // One answer of ListStatuses during the pull.
  void Observe(const std::vector<Ingest>& ingests);
  PullSnapshot snapshot() const { return snapshot_; }

 private:
  struct Tracked {
    int64_t offset = 0;
    int64_t total = 0;
    bool done = false;
  };
  struct Seen {
    int64_t offset = 0;
    int64_t updated_at_ns = 0;
  };
  void Recount();

  std::map<std::string, Seen> baseline_;
  std::map<std::string, Tracked> layers_;
  PullSnapshot snapshot_;
};

// Human bytes as `docker pull` prints them (SI units): "512B", "3.1kB", "6.3MB", "1.20GB".
std::string HumanBytes(uint64_t bytes);

// What RenderPullLine draws.
struct PullView {
  std::string_view image;
  PullSnapshot snapshot;
  double elapsed_seconds = 0;
  size_t frame = 0;  // the spinner frame (counts up with each redraw)
};

// One terminal line of at most `width` columns (the spinner glyph is one column; the line holds
// no newline or carriage return). With layers seen: the spinner, "pulling <image>", a bar of
// bytes, "3.1/6.3MB", "1/3 layers" and the elapsed time; without (no content service, or
// nothing downloading yet): a spinner line like Spinner's. Narrow widths drop the bar first,
// then shorten the image name (keeping its end: the tag), then drop the counts.
std::string RenderPullLine(const PullView& view, size_t width);

// How many columns the line takes (UTF-8 aware: the spinner glyph and "…" are one each).
size_t DisplayWidth(std::string_view s);

// Where the ingests come from.
class IngestSource {
 public:
  virtual ~IngestSource() = default;
  // The ingests in progress. Unimplemented where the endpoint (or this build) has no content
  // service; Unavailable when it does not answer.
  virtual StatusOr<std::vector<Ingest>> ListIngests() = 0;
};

// containerd's content service on the unix socket `socket_path`, namespace `ns`, each call with
// a deadline of `timeout`. Does not connect yet (like CriClient::Connect).
std::unique_ptr<IngestSource> ContentIngestSource(
    const std::string& socket_path, std::string_view ns = kCriContainerdNamespace,
    std::chrono::milliseconds timeout = std::chrono::seconds(2));

struct PullProgressOptions {
  // Time between two polls of the content service.
  std::chrono::milliseconds interval{100};
  // Columns of the terminal line; 0: $COLUMNS, else the terminal of fd 2, else 80.
  size_t width = 0;
  // Measures the elapsed time; nullptr: Clock::Real().
  Clock* clock = nullptr;
  // Where the ingests come from; nullptr: ContentIngestSource(socket).
  std::unique_ptr<IngestSource> source{};
  // Called after each answered poll (on the polling thread, and last on Finish's caller).
  std::function<void(const PullSnapshot&)> on_snapshot{};
};

class PullProgress {
 public:
  using Options = PullProgressOptions;

  // Starts polling `socket_path`'s content service and drawing on `out` (a terminal line when
  // `terminal`, else plain lines). The first poll (the baseline) runs before this returns, so
  // the caller should start the pull right after.
  PullProgress(std::string socket_path, std::string image, std::ostream& out, bool terminal,
               Options options = {});
  ~PullProgress();  // Finish("") unless called
  PullProgress(const PullProgress&) = delete;
  PullProgress& operator=(const PullProgress&) = delete;

  // Stops polling after one last poll (which sees the finished downloads gone), clears the
  // terminal line, prints `line` (if any) on a line of its own, and returns the last snapshot.
  // Later calls return the same snapshot and print nothing.
  PullSnapshot Finish(std::string_view line);

  // The latest snapshot (any thread).
  PullSnapshot snapshot() const;
  // False once the content service answered Unimplemented (or this build has none): a spinner.
  bool content_service() const { return content_service_.load(); }
  double elapsed_seconds() const;

 private:
  void Loop();
  void PollOnce(bool baseline);
  void Draw(bool final_draw);

  const std::string image_;
  std::ostream& out_;
  const bool terminal_;
  Options options_;
  Clock* clock_;
  const Clock::MonoTime start_;
  size_t width_ = 80;

  mutable std::mutex mu_;  // guards tracker_, the drawing state, stop_
  std::condition_variable cv_;
  IngestTracker tracker_;
  bool stop_ = false;
  bool finished_ = false;
  size_t frame_ = 0;
  size_t drawn_width_ = 0;
  std::string last_plain_;
  std::atomic<bool> content_service_{true};
  std::thread thread_;
};

}  // namespace fun::cri

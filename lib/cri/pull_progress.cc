#include "lib/cri/pull_progress.h"

#include <fmt/format.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <utility>

#if FUN_HAVE_CONTAINERD_CONTENT
#include <grpcpp/grpcpp.h>

#include "github.com/containerd/containerd/api/services/content/v1/content.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/content/v1/content.pb.h"
#endif

namespace fun::cri {

namespace {

constexpr const char* kFrames[] = {"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"};
constexpr size_t kMaxBarInner = 30;
constexpr size_t kMinBarInner = 10;
constexpr size_t kMinImageColumns = 12;

uint64_t Size(int64_t offset, int64_t total) {
  return static_cast<uint64_t>(std::max<int64_t>({offset, total, 0}));
}

// The last `columns` code points of `s`, with "…" in front when something was cut.
std::string KeepEnd(std::string_view s, size_t columns) {
  if (DisplayWidth(s) <= columns) return std::string(s);
  if (columns == 0) return "";
  size_t keep = columns - 1;  // one column for "…"
  size_t i = s.size();
  while (i > 0 && keep > 0) {
    --i;
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) --keep;
  }
  return "…" + std::string(s.substr(i));
}

// The first `columns` code points of `s`.
std::string KeepStart(std::string_view s, size_t columns) {
  size_t n = 0;
  size_t i = 0;
  for (; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
      if (n == columns) break;
      ++n;
    }
  }
  return std::string(s.substr(0, i));
}

std::string Bar(uint64_t done, uint64_t total, size_t inner) {
  size_t filled = inner;
  if (total > 0 && done < total) {
    filled = static_cast<size_t>(static_cast<double>(done) / static_cast<double>(total) *
                                 static_cast<double>(inner));
  }
  std::string bar = "[";
  if (filled >= inner) {
    bar.append(inner, '=');
  } else {
    bar.append(filled, '=');
    bar += '>';
    bar.append(inner - filled - 1, ' ');
  }
  return bar + "]";
}

size_t TerminalColumns() {
  if (const char* c = std::getenv("COLUMNS"); c != nullptr) {
    char* end = nullptr;
    long n = std::strtol(c, &end, 10);
    if (end != c && *end == '\0' && n >= 20 && n <= 1000) return static_cast<size_t>(n);
  }
  winsize ws{};
  if (::ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col;
  return 80;
}

// --- the content service --------------------------------------------------------------------

#if FUN_HAVE_CONTAINERD_CONTENT
namespace content_v1 = ::containerd::services::content::v1;

int64_t ToNs(const google::protobuf::Timestamp& t) {
  return t.seconds() * 1'000'000'000 + t.nanos();
}

class GrpcIngestSource final : public IngestSource {
 public:
  GrpcIngestSource(const std::string& socket_path, std::string_view ns,
                   std::chrono::milliseconds timeout)
      : ns_(ns), timeout_(timeout) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    // A few hundred ingests at most in practice; bounds what a peer can make us allocate.
    args.SetMaxReceiveMessageSize(4 << 20);
    channel_ =
        grpc::CreateCustomChannel("unix:" + socket_path, grpc::InsecureChannelCredentials(), args);
    stub_ = content_v1::Content::NewStub(channel_);
  }

  StatusOr<std::vector<Ingest>> ListIngests() override {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout_);
    ctx.AddMetadata("containerd-namespace", ns_);
    content_v1::ListStatusesRequest req;
    content_v1::ListStatusesResponse resp;
    grpc::Status s = stub_->ListStatuses(&ctx, req, &resp);
    if (!s.ok()) {
      return FromCanonicalCode(static_cast<int>(s.error_code()), s.error_message())
          .WithContext("containerd Content.ListStatuses");
    }
    std::vector<Ingest> out;
    out.reserve(static_cast<size_t>(resp.statuses_size()));
    for (const content_v1::Status& st : resp.statuses()) {
      out.push_back(Ingest{.ref = st.ref(),
                           .offset = st.offset(),
                           .total = st.total(),
                           .started_at_ns = ToNs(st.started_at()),
                           .updated_at_ns = ToNs(st.updated_at())});
    }
    return out;
  }

 private:
  const std::string ns_;
  const std::chrono::milliseconds timeout_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<content_v1::Content::Stub> stub_;
};
#endif  // FUN_HAVE_CONTAINERD_CONTENT

#if !FUN_HAVE_CONTAINERD_CONTENT
class UnimplementedIngestSource final : public IngestSource {
 public:
  StatusOr<std::vector<Ingest>> ListIngests() override {
    return UnimplementedError(
        "this build has no containerd content service (golang-github-containerd-containerd-dev "
        "was missing when it was configured)");
  }
};
#endif

}  // namespace

bool ContentServiceCompiledIn() { return FUN_HAVE_CONTAINERD_CONTENT != 0; }

bool IsLayerIngest(std::string_view ref) { return ref.rfind("layer-", 0) == 0; }

std::unique_ptr<IngestSource> ContentIngestSource(const std::string& socket_path,
                                                  std::string_view ns,
                                                  std::chrono::milliseconds timeout) {
#if FUN_HAVE_CONTAINERD_CONTENT
  return std::make_unique<GrpcIngestSource>(socket_path, ns, timeout);
#else
  (void)socket_path;
  (void)ns;
  (void)timeout;
  return std::make_unique<UnimplementedIngestSource>();
#endif
}

// --- IngestTracker ----------------------------------------------------------------------------

void IngestTracker::Baseline(const std::vector<Ingest>& ingests) {
  for (const Ingest& in : ingests) {
    baseline_[in.ref] = Seen{.offset = in.offset, .updated_at_ns = in.updated_at_ns};
  }
  snapshot_.from_content = true;
}

void IngestTracker::Observe(const std::vector<Ingest>& ingests) {
  std::set<std::string, std::less<>> listed;
  for (const Ingest& in : ingests) {
    listed.insert(in.ref);
    if (auto b = baseline_.find(in.ref); b != baseline_.end()) {
      if (b->second.offset == in.offset && b->second.updated_at_ns == in.updated_at_ns) continue;
      baseline_.erase(b);  // it moved: this pull resumed it
    }
    if (!IsLayerIngest(in.ref)) continue;
    Tracked& t = layers_[in.ref];
    t.offset = std::max<int64_t>(in.offset, 0);
    t.total = std::max<int64_t>(in.total, 0);
    t.done = false;
  }
  for (auto& [ref, t] : layers_) {
    if (!t.done && !listed.contains(ref)) t.done = true;  // committed: containerd deleted it
  }
  std::erase_if(baseline_, [&](const auto& kv) { return !listed.contains(kv.first); });
  snapshot_.from_content = true;
  ++snapshot_.polls;
  Recount();
}

void IngestTracker::Recount() {
  snapshot_.layers_seen = static_cast<int>(layers_.size());
  snapshot_.layers_done = 0;
  snapshot_.bytes_done = 0;
  snapshot_.bytes_total = 0;
  for (const auto& [ref, t] : layers_) {
    const uint64_t size = Size(t.offset, t.total);
    snapshot_.bytes_total += size;
    if (t.done) {
      ++snapshot_.layers_done;
      snapshot_.bytes_done += size;
    } else {
      snapshot_.bytes_done += static_cast<uint64_t>(t.offset);
    }
  }
}

// --- rendering --------------------------------------------------------------------------------

std::string HumanBytes(uint64_t b) {
  if (b < 1000) return fmt::format("{}B", b);
  if (b < 1000 * 1000) return fmt::format("{:.1f}kB", static_cast<double>(b) / 1e3);
  if (b < 1000ull * 1000 * 1000) return fmt::format("{:.1f}MB", static_cast<double>(b) / 1e6);
  return fmt::format("{:.2f}GB", static_cast<double>(b) / 1e9);
}

std::string PullSnapshot::Describe() const {
  if (layers_seen == 0) return "resolving";
  return fmt::format("{}/{} layers, {}/{}", layers_done, layers_seen, HumanBytes(bytes_done),
                     HumanBytes(bytes_total));
}

size_t DisplayWidth(std::string_view s) {
  size_t n = 0;
  for (char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

std::string RenderPullLine(const PullView& v, size_t width) {
  const std::string glyph = kFrames[v.frame % 10];
  const std::string time = fmt::format("{:.1f}s", v.elapsed_seconds);
  const PullSnapshot& s = v.snapshot;
  std::string line;
  if (s.layers_seen == 0) {
    // Nothing to measure (yet): a spinner line, as Spinner draws it.
    const size_t fixed = DisplayWidth(glyph) + 1 + 8 + 2 + time.size();  // "g pulling X  t"
    std::string image = KeepEnd(v.image, width > fixed + kMinImageColumns
                                             ? width - fixed
                                             : std::min(v.image.size(), kMinImageColumns));
    line = fmt::format("{} pulling {}  {}", glyph, image, time);
    return KeepStart(line, width);
  }
  const std::string bytes =
      fmt::format("{}/{}", HumanBytes(s.bytes_done), HumanBytes(s.bytes_total));
  const std::string layers = fmt::format("{}/{} layers", s.layers_done, s.layers_seen);
  const std::string counts = bytes + "  " + layers + "  " + time;
  // "g pulling IMAGE [bar] counts": everything but the image and the bar.
  const size_t fixed = DisplayWidth(glyph) + 1 + 8 + 1 + DisplayWidth(counts);
  const size_t image_cols = DisplayWidth(v.image);
  if (width >= fixed + image_cols + 1 + 2 + kMinBarInner) {
    const size_t inner = std::min(kMaxBarInner, width - fixed - image_cols - 1 - 2);
    line = fmt::format("{} pulling {} {} {}", glyph, v.image,
                       Bar(s.bytes_done, s.bytes_total, inner), counts);
  } else if (width >= fixed + std::min(image_cols, kMinImageColumns)) {
    line = fmt::format("{} pulling {} {}", glyph,
                       KeepEnd(v.image, std::min(image_cols, width - fixed)), counts);
  } else {
    // Too narrow for the counts: the layers and the time only, then whatever fits.
    line = fmt::format("{} pulling {} {}  {}", glyph, KeepEnd(v.image, kMinImageColumns), layers,
                       time);
  }
  return KeepStart(line, width);
}

// --- PullProgress -----------------------------------------------------------------------------

PullProgress::PullProgress(std::string socket_path, std::string image, std::ostream& out,
                           bool terminal, Options options)
    : image_(std::move(image)),
      out_(out),
      terminal_(terminal),
      options_(std::move(options)),
      clock_(options_.clock != nullptr ? options_.clock : &Clock::Real()),
      start_(clock_->MonotonicNow()) {
  width_ = options_.width != 0 ? options_.width : (terminal_ ? TerminalColumns() : 80);
  // The last column stays free: a line that fills it makes some terminals wrap.
  if (width_ > 1) --width_;
  if (options_.source == nullptr) options_.source = ContentIngestSource(socket_path);
  PollOnce(/*baseline=*/true);
  {
    std::lock_guard<std::mutex> lock(mu_);
    Draw(/*final_draw=*/false);
  }
  thread_ = std::thread([this] { Loop(); });
}

PullProgress::~PullProgress() { Finish(""); }

double PullProgress::elapsed_seconds() const {
  return std::chrono::duration<double>(clock_->MonotonicNow() - start_).count();
}

PullSnapshot PullProgress::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return tracker_.snapshot();
}

void PullProgress::Loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, options_.interval, [this] { return stop_; });
      if (stop_) return;
    }
    PollOnce(/*baseline=*/false);
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_) Draw(/*final_draw=*/false);
  }
}

// The source is used by one thread at a time: the constructor, then Loop, then Finish (after
// joining Loop).
void PullProgress::PollOnce(bool baseline) {
  if (!content_service_.load()) return;
  StatusOr<std::vector<Ingest>> got = options_.source->ListIngests();
  if (!got.ok()) {
    // No content service there (or in this build): a spinner from now on. Anything else (not
    // reachable, too slow) may pass: the next poll tries again.
    if (got.status().code() == Code::kUnimplemented) content_service_ = false;
    return;
  }
  PullSnapshot snap;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (baseline) {
      tracker_.Baseline(*got);
    } else {
      tracker_.Observe(*got);
    }
    snap = tracker_.snapshot();
  }
  if (!baseline && options_.on_snapshot) options_.on_snapshot(snap);
}

// Called with mu_ held.
void PullProgress::Draw(bool final_draw) {
  const PullSnapshot s = tracker_.snapshot();
  if (terminal_) {
    if (final_draw) return;
    std::string line = RenderPullLine(PullView{.image = image_,
                                               .snapshot = s,
                                               .elapsed_seconds = elapsed_seconds(),
                                               .frame = frame_++},
                                      width_);
    const size_t w = DisplayWidth(line);
    out_ << "\r" << line << std::string(drawn_width_ > w ? drawn_width_ - w : 0, ' ') << std::flush;
    drawn_width_ = w;
    return;
  }
  // Plain lines: one when the layer counts change (and the first one), not per byte.
  const std::string key = fmt::format("{}/{}", s.layers_done, s.layers_seen);
  if (key == last_plain_) return;
  last_plain_ = key;
  if (s.layers_seen == 0) {
    out_ << fmt::format("pulling {} ({:.1f}s)", image_, elapsed_seconds()) << std::endl;
  } else {
    out_ << fmt::format("pulling {}: {} ({:.1f}s)", image_, s.Describe(), elapsed_seconds())
         << std::endl;
  }
}

PullSnapshot PullProgress::Finish(std::string_view line) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return tracker_.snapshot();
    finished_ = true;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // The downloads that ended since the last poll are gone from the list now.
  PollOnce(/*baseline=*/false);
  std::lock_guard<std::mutex> lock(mu_);
  if (terminal_) {
    if (drawn_width_ > 0) out_ << "\r" << std::string(drawn_width_, ' ') << "\r";
  } else {
    Draw(/*final_draw=*/true);
  }
  if (!line.empty()) out_ << line << "\n";
  out_ << std::flush;
  return tracker_.snapshot();
}

}  // namespace fun::cri

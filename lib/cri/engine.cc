#include "lib/cri/engine.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

#include "lib/base/log.h"

namespace fun::cri {

namespace {

std::string RandomHex(size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::random_device rd;
  std::string out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(kHex[rd() % 16]);
  return out;
}

std::optional<int64_t> ParseId(std::string_view s) {
  if (s.empty() || s.size() > 10) return std::nullopt;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < 0 || v > 0xFFFFFFFFLL) {
    return std::nullopt;
  }
  return v;
}

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

StringMap OurLabels(const std::string& name) {
  return StringMap{{std::string(kLabelManaged), "true"}, {std::string(kLabelName), name}};
}

}  // namespace

namespace {

std::string_view ProtocolName(PortMapping::Protocol p) {
  switch (p) {
    case PortMapping::Protocol::kUdp:
      return "udp";
    case PortMapping::Protocol::kSctp:
      return "sctp";
    case PortMapping::Protocol::kTcp:
      break;
  }
  return "tcp";
}

nlohmann::json PortsJsonValue(const std::vector<PortMapping>& ports) {
  nlohmann::json j = nlohmann::json::array();
  for (const PortMapping& p : ports) {
    j.push_back({{"host_ip", p.host_ip},
                 {"host_port", p.host_port},
                 {"container_port", p.container_port},
                 {"protocol", ProtocolName(p.protocol)}});
  }
  return j;
}

StatusOr<std::vector<PortMapping>> PortsFromJsonValue(const nlohmann::json& j) {
  if (!j.is_array()) return InvalidArgumentError("ports: expected an array");
  std::vector<PortMapping> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const nlohmann::json& e = j[i];
    auto bad = [&](std::string_view what) {
      return InvalidArgumentError(fmt::format("ports[{}]: {}", i, what));
    };
    if (!e.is_object()) return bad("expected an object");
    PortMapping p;
    auto port = [&](const char* key, int32_t* v) -> Status {
      auto it = e.find(key);
      if (it == e.end() || !it->is_number_integer()) return bad(fmt::format("{} is missing", key));
      const int64_t n = it->get<int64_t>();
      if (n < 1 || n > 65535) return bad(fmt::format("{} {} is out of range 1..65535", key, n));
      *v = static_cast<int32_t>(n);
      return OkStatus();
    };
    FUN_RETURN_IF_ERROR(port("host_port", &p.host_port));
    FUN_RETURN_IF_ERROR(port("container_port", &p.container_port));
    if (auto it = e.find("host_ip"); it != e.end()) {
      if (!it->is_string() || it->get<std::string>().size() > 64) return bad("host_ip is invalid");
      p.host_ip = it->get<std::string>();
    }
    const std::string proto = e.value("protocol", std::string("tcp"));
    if (proto == "udp") {
      p.protocol = PortMapping::Protocol::kUdp;
    } else if (proto == "sctp") {
      p.protocol = PortMapping::Protocol::kSctp;
    } else if (proto != "tcp") {
      return bad("protocol must be tcp or udp");
    }
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace

std::string PortsToJson(const std::vector<PortMapping>& ports) {
  return PortsJsonValue(ports).dump();
}

StatusOr<std::vector<PortMapping>> PortsFromJson(std::string_view json) {
  auto j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgumentError("ports: not JSON");
  return PortsFromJsonValue(j);
}

std::string RunSpecToJson(const RunSpec& spec) {
  nlohmann::json j;
  j["image"] = spec.image;
  j["name"] = spec.name;
  if (spec.entrypoint) j["entrypoint"] = *spec.entrypoint;
  j["cmd"] = spec.cmd;
  nlohmann::json env = nlohmann::json::array();
  for (const auto& [k, v] : spec.env) env.push_back({k, v});
  j["env"] = env;
  j["workdir"] = spec.workdir;
  j["user"] = spec.user;
  j["rm"] = spec.rm;
  j["tty"] = spec.tty;
  j["interactive"] = spec.interactive;
  j["host_network"] = spec.host_network;
  j["privileged"] = spec.privileged;
  j["host_pid"] = spec.host_pid;
  j["ports"] = PortsJsonValue(spec.ports);
  nlohmann::json mounts = nlohmann::json::array();
  for (const BindMount& m : spec.mounts) {
    mounts.push_back({{"host_path", m.host_path},
                      {"source", m.source},
                      {"container_path", m.container_path},
                      {"readonly", m.readonly}});
  }
  j["mounts"] = mounts;
  return j.dump();
}

StatusOr<RunSpec> RunSpecFromJson(std::string_view json) {
  auto j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return InvalidArgumentError("run spec: not a JSON object");
  RunSpec s;
  auto strings = [&](const nlohmann::json& v, const char* key,
                     std::vector<std::string>* out) -> Status {
    if (!v.is_array()) return InvalidArgumentError(fmt::format("run spec: {} is not a list", key));
    for (const auto& e : v) {
      if (!e.is_string()) {
        return InvalidArgumentError(fmt::format("run spec: {} has a non-string", key));
      }
      out->push_back(e.get<std::string>());
    }
    return OkStatus();
  };
  auto str = [&](const char* key, std::string* out) -> Status {
    auto it = j.find(key);
    if (it == j.end()) return OkStatus();
    if (!it->is_string()) {
      return InvalidArgumentError(fmt::format("run spec: {} is not a string", key));
    }
    *out = it->get<std::string>();
    return OkStatus();
  };
  auto flag = [&](const char* key, bool* out) -> Status {
    auto it = j.find(key);
    if (it == j.end()) return OkStatus();
    if (!it->is_boolean()) {
      return InvalidArgumentError(fmt::format("run spec: {} is not a boolean", key));
    }
    *out = it->get<bool>();
    return OkStatus();
  };
  FUN_RETURN_IF_ERROR(str("image", &s.image));
  if (s.image.empty()) return InvalidArgumentError("run spec: the image is missing");
  FUN_RETURN_IF_ERROR(str("name", &s.name));
  if (auto it = j.find("entrypoint"); it != j.end()) {
    s.entrypoint.emplace();
    FUN_RETURN_IF_ERROR(strings(*it, "entrypoint", &*s.entrypoint));
  }
  if (auto it = j.find("cmd"); it != j.end()) FUN_RETURN_IF_ERROR(strings(*it, "cmd", &s.cmd));
  if (auto it = j.find("env"); it != j.end()) {
    if (!it->is_array()) return InvalidArgumentError("run spec: env is not a list");
    for (const auto& e : *it) {
      if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_string()) {
        return InvalidArgumentError("run spec: env has an entry that is not [name, value]");
      }
      s.env.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
    }
  }
  FUN_RETURN_IF_ERROR(str("workdir", &s.workdir));
  FUN_RETURN_IF_ERROR(str("user", &s.user));
  FUN_RETURN_IF_ERROR(flag("rm", &s.rm));
  FUN_RETURN_IF_ERROR(flag("tty", &s.tty));
  FUN_RETURN_IF_ERROR(flag("interactive", &s.interactive));
  FUN_RETURN_IF_ERROR(flag("host_network", &s.host_network));
  FUN_RETURN_IF_ERROR(flag("privileged", &s.privileged));
  FUN_RETURN_IF_ERROR(flag("host_pid", &s.host_pid));
  if (auto it = j.find("ports"); it != j.end()) {
    FUN_ASSIGN_OR_RETURN(s.ports, PortsFromJsonValue(*it));
  }
  if (auto it = j.find("mounts"); it != j.end()) {
    if (!it->is_array()) return InvalidArgumentError("run spec: mounts is not a list");
    for (size_t i = 0; i < it->size(); ++i) {
      const nlohmann::json& m = (*it)[i];
      auto bad = [&](std::string_view what) {
        return InvalidArgumentError(fmt::format("run spec: mounts[{}]: {}", i, what));
      };
      if (!m.is_object()) return bad("expected an object");
      BindMount b;
      auto path = [&](const char* key, std::string* out, bool required) -> Status {
        auto f = m.find(key);
        if (f == m.end() && !required) return OkStatus();
        if (f == m.end() || !f->is_string()) return bad(fmt::format("{} is missing", key));
        *out = f->get<std::string>();
        return OkStatus();
      };
      FUN_RETURN_IF_ERROR(path("container_path", &b.container_path, true));
      FUN_RETURN_IF_ERROR(path("source", &b.source, true));
      FUN_RETURN_IF_ERROR(path("host_path", &b.host_path, false));
      if (b.host_path.empty()) b.host_path = b.source;
      if (auto f = m.find("readonly"); f != m.end()) {
        if (!f->is_boolean()) return bad("readonly is not a boolean");
        b.readonly = f->get<bool>();
      }
      s.mounts.push_back(std::move(b));
    }
    FUN_RETURN_IF_ERROR(ValidateBindMounts(s.mounts).WithContext("run spec"));
  }
  return s;
}

namespace {

// "" when `path` is absolute and clean (no empty, "." or ".." component, no trailing "/"),
// else what is wrong with it.
std::string CleanPathProblem(std::string_view path) {
  if (path.empty()) return "is empty";
  if (path.front() != '/') return "is not absolute";
  if (path.size() > 4095) return "is longer than 4095 bytes";
  if (path.find('\0') != std::string_view::npos) return "contains a NUL character";
  if (path == "/") return "";
  size_t start = 1;
  for (;;) {
    const size_t end = std::min(path.find('/', start), path.size());
    const std::string_view part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return "is not a clean path";
    if (end == path.size()) return "";
    start = end + 1;
  }
}

}  // namespace

Status ValidateBindMounts(const std::vector<BindMount>& mounts) {
  for (size_t i = 0; i < mounts.size(); ++i) {
    const BindMount& m = mounts[i];
    auto bad = [&](std::string_view what, std::string_view path, std::string_view problem) {
      return InvalidArgumentError(
          fmt::format("mount {}: the {} \"{:.200}\" {}", i + 1, what, path, problem));
    };
    auto check = [&](std::string_view what, const std::string& path) -> Status {
      if (std::string p = CleanPathProblem(path); !p.empty()) return bad(what, path, p);
      return OkStatus();
    };
    FUN_RETURN_IF_ERROR(check("container path", m.container_path));
    FUN_RETURN_IF_ERROR(check("source", m.source));
    FUN_RETURN_IF_ERROR(check("host path", m.host_path));
    if (m.container_path == "/") {
      return bad("container path", m.container_path, "is the container's root");
    }
    for (size_t k = 0; k < i; ++k) {
      if (mounts[k].container_path == m.container_path) {
        return bad("container path", m.container_path, "is mounted twice");
      }
    }
  }
  return OkStatus();
}

Status ValidateContainerName(std::string_view name) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(fmt::format(
        "invalid container name \"{:.80}\": {}; use letters, digits and _ . - (starting with a "
        "letter or digit)",
        name, why));
  };
  if (name.empty()) return bad("it is empty");
  if (name.size() > 128) return bad("it is longer than 128 characters");
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!alnum(name[0])) return bad("it does not start with a letter or digit");
  for (char c : name) {
    if (!alnum(c) && c != '_' && c != '.' && c != '-') {
      return bad(fmt::format("it contains '{}'", c >= 0x20 && c < 0x7f ? c : '?'));
    }
  }
  return OkStatus();
}

StatusOr<UserSpec> ParseUserSpec(std::string_view spec) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(fmt::format(
        "invalid --user \"{:.80}\": {}; use UID, UID:GID or a user name of the image", spec, why));
  };
  UserSpec u;
  if (spec.empty()) return u;
  const size_t colon = spec.find(':');
  const std::string_view user = spec.substr(0, colon);
  const std::string_view group =
      colon == std::string_view::npos ? std::string_view() : spec.substr(colon + 1);
  if (user.empty()) return bad("the user part is empty");
  if (AllDigits(user)) {
    u.uid = ParseId(user);
    if (!u.uid) return bad("the uid is out of range");
  } else {
    for (char c : user) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '-' || c == '.';
      if (!ok) return bad("the user name has characters a user name cannot have");
    }
    u.name = std::string(user);
  }
  if (colon != std::string_view::npos) {
    if (!AllDigits(group)) {
      return bad("the group must be a numeric GID (CRI cannot look up group names)");
    }
    if (!u.name.empty()) {
      return bad(
          "a group goes only with a numeric UID (CRI cannot combine a user name and a group)");
    }
    u.gid = ParseId(group);
    if (!u.gid) return bad("the gid is out of range");
  }
  return u;
}

Engine::Engine(CriClient* cri, EngineOptions options)
    : cri_(cri),
      options_(std::move(options)),
      clock_(options_.clock != nullptr ? options_.clock : &Clock::Real()) {}

StatusOr<std::string> Engine::EnsureImage(const std::string& ref, const PullCallback& on_pull,
                                          bool* pulled) {
  if (pulled != nullptr) *pulled = false;
  FUN_ASSIGN_OR_RETURN(std::optional<Image> have, cri_->ImageStatus(ref));
  if (have.has_value()) return have->id;
  if (on_pull) on_pull(ref);
  StatusOr<std::string> id = cri_->PullImage(ref);
  if (!id.ok()) return id.status().WithContext(fmt::format("pulling {}", ref));
  if (pulled != nullptr) *pulled = true;
  return *id;
}

StatusOr<RunResult> Engine::Run(const RunSpec& spec, const PullCallback& on_pull) {
  return RunReplacing(spec, "", on_pull);
}

StatusOr<RunResult> Engine::RunReplacing(const RunSpec& spec, std::string_view replaces_id,
                                         const PullCallback& on_pull) {
  RunResult r;
  r.name = spec.name.empty() ? "fun_" + RandomHex(8) : spec.name;
  FUN_RETURN_IF_ERROR(ValidateContainerName(r.name));
  FUN_ASSIGN_OR_RETURN(UserSpec user, ParseUserSpec(spec.user));
  FUN_RETURN_IF_ERROR(ValidateBindMounts(spec.mounts));
  if (spec.image.empty())
    return InvalidArgumentError("no image given: fun run [OPTIONS] IMAGE [CMD...]");

  // The name must be free among our containers.
  FUN_ASSIGN_OR_RETURN(
      std::vector<Container> same,
      cri_->ListContainers({.label_selector = {{std::string(kLabelName), r.name},
                                               {std::string(kLabelManaged), "true"}}}));
  std::erase_if(same, [&](const Container& c) { return c.id == replaces_id; });
  if (!same.empty()) {
    return AlreadyExistsError(
        fmt::format("the name \"{}\" is in use by container {}: remove it (fun rm -f {}) or pick "
                    "another --name",
                    r.name, same.front().id.substr(0, 12), r.name));
  }

  FUN_ASSIGN_OR_RETURN(std::string image_id, EnsureImage(spec.image, on_pull, &r.pulled));
  (void)image_id;

  PodSpec pod;
  pod.name = r.name;
  pod.uid = RandomHex(32);
  pod.ns = std::string(kPodNamespace);
  // A host-network pod shares the host's UTS namespace too: its hostname is the host's.
  if (!spec.host_network) pod.hostname = r.name.size() <= 63 ? r.name : r.name.substr(0, 63);
  pod.log_directory = fmt::format("{}/{}_{}", options_.log_root, r.name, pod.uid.substr(0, 12));
  if (options_.ports_via_cri) pod.ports = spec.ports;
  pod.host_network = spec.host_network;
  pod.privileged = spec.privileged;
  pod.host_pid = spec.host_pid;
  pod.labels = OurLabels(r.name);
  nlohmann::json command = nlohmann::json::array();
  if (spec.entrypoint) {
    for (const std::string& a : *spec.entrypoint) command.push_back(a);
  }
  for (const std::string& a : spec.cmd) command.push_back(a);
  pod.annotations[std::string(kAnnotationCommand)] = command.dump();
  if (spec.rm) pod.annotations[std::string(kAnnotationRm)] = "true";
  if (!spec.ports.empty()) {
    pod.annotations[std::string(kAnnotationPorts)] = PortsToJson(spec.ports);
  }
  {
    RunSpec stored = spec;
    stored.name = r.name;
    pod.annotations[std::string(kAnnotationSpec)] = RunSpecToJson(stored);
  }

  StatusOr<std::string> pod_id = cri_->RunPodSandbox(pod);
  if (!pod_id.ok()) {
    return pod_id.status().WithContext(fmt::format("starting the pod of {}", r.name));
  }
  r.pod_id = *pod_id;
  auto undo_pod = [&] {
    (void)cri_->StopPodSandbox(r.pod_id);
    (void)cri_->RemovePodSandbox(r.pod_id);
  };

  ContainerSpec c;
  c.name = r.name;
  c.image = spec.image;
  if (spec.entrypoint) c.command = *spec.entrypoint;
  c.args = spec.cmd;
  c.working_dir = spec.workdir;
  c.envs = spec.env;
  for (const BindMount& m : spec.mounts) {
    c.mounts.push_back(
        {.container_path = m.container_path, .host_path = m.source, .readonly = m.readonly});
  }
  c.labels = pod.labels;
  c.annotations = pod.annotations;
  c.log_path = r.name + ".log";
  c.stdin = spec.interactive;
  c.stdin_once = spec.interactive;
  c.tty = spec.tty;
  c.run_as_user = user.uid;
  c.run_as_group = user.gid;
  c.run_as_username = user.name;
  c.host_network = spec.host_network;
  c.privileged = spec.privileged;
  c.host_pid = spec.host_pid;
  StatusOr<std::string> id = cri_->CreateContainer(r.pod_id, c, pod);
  if (!id.ok()) {
    undo_pod();
    return id.status().WithContext(fmt::format("creating container {}", r.name));
  }
  r.container_id = *id;
  if (Status s = cri_->StartContainer(r.container_id); !s.ok()) {
    (void)cri_->RemoveContainer(r.container_id);
    undo_pod();
    return s.WithContext(fmt::format("starting container {}", r.name));
  }
  return r;
}

StatusOr<ContainerInfo> Engine::Describe(const Container& listed) {
  FUN_ASSIGN_OR_RETURN(Container st, cri_->ContainerStatus(listed.id));
  ContainerInfo info;
  st.pod_sandbox_id = listed.pod_sandbox_id;
  info.container = std::move(st);
  info.pod_id = listed.pod_sandbox_id;
  const StringMap& labels = info.container.labels;
  if (auto it = labels.find(std::string(kLabelName)); it != labels.end()) info.name = it->second;
  const StringMap& ann = info.container.annotations;
  if (auto it = ann.find(std::string(kAnnotationCommand)); it != ann.end()) {
    auto j = nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
    if (j.is_array()) {
      for (const auto& a : j) {
        if (a.is_string()) info.command.push_back(a.get<std::string>());
      }
    }
  }
  if (auto it = ann.find(std::string(kAnnotationRm)); it != ann.end())
    info.rm = it->second == "true";
  if (auto it = ann.find(std::string(kAnnotationPorts)); it != ann.end()) {
    // A container whose annotation does not parse publishes nothing (it is not one we made).
    if (auto ports = PortsFromJson(it->second); ports.ok()) info.ports = std::move(*ports);
  }
  if (auto it = ann.find(std::string(kAnnotationSpec)); it != ann.end()) {
    if (auto spec = RunSpecFromJson(it->second); spec.ok()) {
      info.host_network = spec->host_network;
      info.privileged = spec->privileged;
      info.host_pid = spec->host_pid;
      info.mounts = std::move(spec->mounts);
      return info;
    }
  }
  // Not one we made (or its spec does not parse): what containerd says it mounts.
  for (const MountSpec& m : info.container.mounts) {
    info.mounts.push_back({.host_path = m.host_path,
                           .source = m.host_path,
                           .container_path = m.container_path,
                           .readonly = m.readonly});
  }
  return info;
}

StatusOr<std::vector<ContainerInfo>> Engine::List(bool all) {
  ContainerFilter f;
  f.label_selector = {{std::string(kLabelManaged), "true"}};
  if (!all) f.state = ContainerState::kRunning;
  FUN_ASSIGN_OR_RETURN(std::vector<Container> listed, cri_->ListContainers(f));
  std::vector<ContainerInfo> out;
  for (const Container& c : listed) {
    StatusOr<ContainerInfo> info = Describe(c);
    // Removed between the list and the status: not ours to show any more.
    if (!info.ok() && info.status().code() == Code::kNotFound) continue;
    if (!info.ok()) return info.status();
    out.push_back(std::move(*info));
  }
  std::sort(out.begin(), out.end(), [](const ContainerInfo& a, const ContainerInfo& b) {
    return a.container.created_at_ns > b.container.created_at_ns;
  });
  return out;
}

StatusOr<ContainerInfo> Engine::Find(std::string_view name_or_id) {
  if (name_or_id.empty()) return InvalidArgumentError("no container name or id given");
  ContainerFilter f;
  f.label_selector = {{std::string(kLabelManaged), "true"}};
  FUN_ASSIGN_OR_RETURN(std::vector<Container> listed, cri_->ListContainers(f));
  const Container* by_name = nullptr;
  std::vector<const Container*> by_prefix;
  for (const Container& c : listed) {
    auto it = c.labels.find(std::string(kLabelName));
    if (it != c.labels.end() && it->second == name_or_id) by_name = &c;
    if (c.id == name_or_id) by_name = by_name != nullptr ? by_name : &c;
    if (c.id.compare(0, name_or_id.size(), name_or_id) == 0) by_prefix.push_back(&c);
  }
  const Container* found = by_name;
  if (found == nullptr && by_prefix.size() == 1) found = by_prefix.front();
  if (found == nullptr && by_prefix.size() > 1) {
    return InvalidArgumentError(
        fmt::format("\"{:.80}\" is the start of {} container ids: give more of the id, or the name",
                    name_or_id, by_prefix.size()));
  }
  if (found == nullptr) {
    return NotFoundError(fmt::format(
        "no container named \"{:.80}\" or with an id starting so: 'fun ps -a' lists them",
        name_or_id));
  }
  FUN_ASSIGN_OR_RETURN(ContainerInfo info, Describe(*found));
  StatusOr<PodSandbox> pod = cri_->PodSandboxStatus(info.pod_id);
  if (pod.ok()) info.pod_ip = pod->ip;
  return info;
}

Status Engine::Stop(std::string_view name_or_id, std::chrono::seconds grace) {
  FUN_ASSIGN_OR_RETURN(ContainerInfo info, Find(name_or_id));
  if (info.container.state != ContainerState::kRunning) return OkStatus();
  return cri_->StopContainer(info.container.id, grace)
      .WithContext(fmt::format("stopping {}", info.name));
}

Status Engine::Remove(std::string_view name_or_id, bool force) {
  FUN_ASSIGN_OR_RETURN(ContainerInfo info, Find(name_or_id));
  if (info.container.state == ContainerState::kRunning) {
    if (!force) {
      return FailedPreconditionError(fmt::format(
          "container {} is running: stop it first (fun stop {}) or remove it with rm -f", info.name,
          info.name));
    }
    FUN_RETURN_IF_ERROR(cri_->StopContainer(info.container.id, std::chrono::seconds(0))
                            .WithContext(fmt::format("stopping {}", info.name)));
  }
  FUN_RETURN_IF_ERROR(
      cri_->RemoveContainer(info.container.id).WithContext(fmt::format("removing {}", info.name)));
  FUN_RETURN_IF_ERROR(cri_->StopPodSandbox(info.pod_id)
                          .WithContext(fmt::format("stopping the pod of {}", info.name)));
  return cri_->RemovePodSandbox(info.pod_id)
      .WithContext(fmt::format("removing the pod of {}", info.name));
}

StatusOr<RunResult> Engine::Start(std::string_view name_or_id) {
  FUN_ASSIGN_OR_RETURN(ContainerInfo info, Find(name_or_id));
  if (info.container.state == ContainerState::kRunning) {
    return RunResult{.name = info.name,
                     .container_id = info.container.id,
                     .pod_id = info.pod_id,
                     .pulled = false};
  }
  auto it = info.container.annotations.find(std::string(kAnnotationSpec));
  if (it == info.container.annotations.end()) {
    return FailedPreconditionError(
        fmt::format("container {} does not record how it was run (made by an older fun or "
                    "another client): remove it and use fun run",
                    info.name));
  }
  StatusOr<RunSpec> spec = RunSpecFromJson(it->second);
  if (!spec.ok()) {
    return spec.status().WithContext(fmt::format(
        "container {}: its recorded run spec is unusable; remove it and use fun run", info.name));
  }
  spec->name = info.name;
  // The old container goes only once the new one runs: a start that fails loses nothing.
  FUN_ASSIGN_OR_RETURN(RunResult r, RunReplacing(*spec, info.container.id, {}));
  if (Status s = RemoveIds(info.container.id, info.pod_id); !s.ok()) {
    FUN_LOG(Warning, "start {}: removing the container it replaced: {}", info.name, s);
  }
  return r;
}

StatusOr<std::vector<PublishedPort>> Engine::Published() {
  FUN_ASSIGN_OR_RETURN(std::vector<ContainerInfo> running, List(/*all=*/false));
  std::vector<PublishedPort> out;
  for (const ContainerInfo& c : running) {
    if (c.ports.empty()) continue;
    std::string ip = "127.0.0.1";
    if (!c.host_network) {
      StatusOr<PodSandbox> pod = cri_->PodSandboxStatus(c.pod_id);
      if (!pod.ok() || pod->ip.empty()) continue;  // going away, or no address yet
      ip = pod->ip;
    }
    for (const PortMapping& p : c.ports) {
      PublishedPort pub{.container = c.name, .container_id = c.container.id, .port = p};
      if (pub.port.host_ip.empty()) pub.port.host_ip = "127.0.0.1";
      pub.target = ip.find(':') != std::string::npos ? fmt::format("[{}]:{}", ip, p.container_port)
                                                     : fmt::format("{}:{}", ip, p.container_port);
      out.push_back(std::move(pub));
    }
  }
  return out;
}

Status Engine::RemoveIds(std::string_view container_id, std::string_view pod_id) {
  FUN_RETURN_IF_ERROR(cri_->RemoveContainer(container_id));
  FUN_RETURN_IF_ERROR(cri_->StopPodSandbox(pod_id));
  return cri_->RemovePodSandbox(pod_id);
}

StatusOr<int> Engine::Wait(std::string_view container_id) {
  // Short polls for the first quarter second (most foreground runs end soon, and containerd
  // records an exit a few ms after it happens), then backing off up to poll_interval.
  Clock::Duration interval = std::chrono::milliseconds(5), waited{};
  Silence silence = NewSilence();
  for (;;) {
    StatusOr<Container> polled = cri_->ContainerStatus(container_id);
    if (!polled.ok()) {
      // A call that ran out its deadline says containerd is slow, not gone (it answers again
      // once the VM has memory or CPU to spare): the container still runs, so keep waiting, for
      // a while. Any other error (containerd gone, the container removed) ends the wait.
      if (polled.status().code() != Code::kDeadlineExceeded) return polled.status();
      if (silence.length() == Clock::Duration{}) {
        FUN_LOG(Warning, "containerd is slow to answer ({}); still waiting for container {}",
                polled.status().message(), container_id.substr(0, 12));
      }
      if (!silence.Bear()) {
        return DeadlineExceededError(fmt::format(
            "containerd has not answered for {} s while waiting for container {} to exit: the VM "
            "may be out of memory or overloaded (fun-doctor says which); last: {}",
            std::chrono::duration_cast<std::chrono::seconds>(silence.length()).count(),
            container_id.substr(0, 12), polled.status().message()));
      }
      continue;
    }
    silence.Reset();
    const Container& st = *polled;
    if (st.state == ContainerState::kExited) return st.exit_code;
    if (st.state == ContainerState::kUnknown) {
      return FailedPreconditionError(fmt::format("container {} is in an unknown state ({}: {})",
                                                 st.id.substr(0, 12), st.reason, st.message));
    }
    const Clock::Duration step = std::min<Clock::Duration>(interval, options_.poll_interval);
    clock_->SleepFor(step);
    waited += step;
    if (waited >= std::chrono::milliseconds(250)) interval *= 2;
  }
}

namespace {

Status CheckExecTarget(const ContainerInfo& info) {
  if (info.container.state != ContainerState::kRunning) {
    return FailedPreconditionError(
        fmt::format("container {} is not running ({}): exec needs a running container", info.name,
                    ContainerStateName(info.container.state)));
  }
  return OkStatus();
}

}  // namespace

StatusOr<std::string> Engine::ExecStreamUrl(std::string_view name_or_id,
                                            const std::vector<std::string>& cmd,
                                            const ExecStreams& streams) {
  if (cmd.empty()) return InvalidArgumentError("no command given: fun exec CONTAINER CMD [ARG...]");
  FUN_ASSIGN_OR_RETURN(ContainerInfo info, Find(name_or_id));
  FUN_RETURN_IF_ERROR(CheckExecTarget(info));
  StatusOr<std::string> url = cri_->Exec(info.container.id, cmd, streams);
  if (!url.ok()) return url.status().WithContext(fmt::format("exec in {}", info.name));
  return url;
}

StatusOr<ExecResult> Engine::Exec(std::string_view name_or_id, const std::vector<std::string>& cmd,
                                  std::chrono::seconds timeout) {
  if (cmd.empty()) return InvalidArgumentError("no command given: fun exec CONTAINER CMD [ARG...]");
  FUN_ASSIGN_OR_RETURN(ContainerInfo info, Find(name_or_id));
  FUN_RETURN_IF_ERROR(CheckExecTarget(info));
  StatusOr<ExecResult> r = cri_->ExecSync(info.container.id, cmd, timeout);
  if (!r.ok()) return r.status().WithContext(fmt::format("exec in {}", info.name));
  return r;
}

}  // namespace fun::cri

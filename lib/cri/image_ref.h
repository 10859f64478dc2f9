// image_ref.h: image references as Docker writes them, checked before they reach containerd
// (pure: a string in, the parts or a one-line error out; fuzzed).
//
//   [DOMAIN[:PORT]/]PATH[:TAG][@ALGO:HEX]
//   busybox                         -> docker.io/library/busybox:latest
//   10.0.2.2:5000/fun/busybox:1.0   -> domain 10.0.2.2:5000, path fun/busybox, tag 1.0
//
// The grammar is the distribution project's: path components are lowercase letters and digits
// joined by '.', '_', '__' or runs of '-'; the first component is a domain when it has a '.' or
// a ':' or is "localhost"; a tag is [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; a name is at most 255
// characters. Errors say which part is wrong and show the expected form.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "lib/base/status.h"

namespace fun::cri {

struct ImageRef {
  std::string domain;  // "docker.io" when none was given
  std::string path;    // "library/busybox" for a one-component name on docker.io
  std::string tag;     // "latest" when neither tag nor digest was given
  std::string digest;  // "sha256:..." or ""
  // The fully qualified form containerd stores: domain/path[:tag][@digest].
  std::string Canonical() const;
};

StatusOr<ImageRef> ParseImageRef(std::string_view ref);

}  // namespace fun::cri

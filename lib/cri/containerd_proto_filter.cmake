# Copies one of containerd's .proto files (as Debian ships it) into the build tree with its
# `import weak` lines turned into plain imports: protoc's C++ generator refuses weak imports in
# its open-source build ("CHECK failed: !options_.opensource_runtime"). Nothing else changes, so
# the messages, field numbers and service paths are Debian's file. Run by lib/cri/CMakeLists.txt
# at build time:
#   cmake -DIN=<containerd's content.proto> -DOUT=<build copy> -P containerd_proto_filter.cmake
if(NOT IN OR NOT OUT)
  message(FATAL_ERROR "containerd_proto_filter.cmake: pass -DIN=<proto> -DOUT=<copy>")
endif()
file(READ "${IN}" _text)
string(REGEX REPLACE "(^|\n)import weak " "\\1import " _text "${_text}")
file(WRITE "${OUT}.tmp" "${_text}")
file(RENAME "${OUT}.tmp" "${OUT}")

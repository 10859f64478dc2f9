# Compile flags and helpers shared by every room.

# Warnings: on for our code only (fun_* targets), errors in CI.
add_library(fun_warnings INTERFACE)
target_compile_options(fun_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align -Wunused
  -Woverloaded-virtual -Wimplicit-fallthrough -Wformat=2
  # Designated initializers leave the other fields at their defaults on purpose.
  -Wno-missing-field-initializers)
if(FUN_WERROR)
  target_compile_options(fun_warnings INTERFACE -Werror)
endif()

# Sanitizers: FUN_SANITIZE=address;undefined applies to everything we build.
if(FUN_SANITIZE)
  list(JOIN FUN_SANITIZE "," _fun_san)
  add_compile_options(-fsanitize=${_fun_san} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${_fun_san})
endif()

if(FUN_BUILD_FUZZERS AND NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  message(FATAL_ERROR "FUN_BUILD_FUZZERS needs clang (libFuzzer): configure with "
                      "-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang")
endif()

# fun_library(NAME <room> SOURCES ... DEPS ...): the static library fun_<room>, alias fun::<room>.
function(fun_library name)
  cmake_parse_arguments(A "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(fun_${name} STATIC ${A_SOURCES})
  add_library(fun::${name} ALIAS fun_${name})
  target_include_directories(fun_${name} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_link_libraries(fun_${name} PUBLIC ${A_DEPS} PRIVATE fun_warnings ${A_PRIVATE_DEPS})
endfunction()

# fun_tool(NAME <binary> SOURCES ... DEPS ...): a program in build/bin.
function(fun_tool name)
  cmake_parse_arguments(A "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${A_SOURCES})
  target_link_libraries(${name} PRIVATE fun_warnings ${A_DEPS})
  install(TARGETS ${name} RUNTIME DESTINATION bin)
endfunction()

# fun_test(NAME <test> SOURCES ... DEPS ... [LABELS ...] [TEST_PREFIX p] [BINARIES MACRO=target ...]
#          [DEFINES ...] [DEPENDS target ...]): a GoogleTest binary in build/tests, each TEST()
# registered with ctest (its name prefixed with p, so two binaries built from one test source
# can both be registered). BINARIES: programs of this build the test runs, their paths compiled
# in as MACRO; DEFINES: more compile definitions; DEPENDS: targets built first. With
# FUN_BUILD_TESTS off it does nothing, so callers never touch a test target themselves.
function(fun_test name)
  if(NOT FUN_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(A "" "TIMEOUT;TEST_PREFIX" "SOURCES;DEPS;LABELS;BINARIES;DEFINES;DEPENDS"
                        ${ARGN})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 120)
  endif()
  if(NOT A_LABELS)
    set(A_LABELS unit)
  endif()
  add_executable(${name} ${A_SOURCES})
  target_link_libraries(${name} PRIVATE fun_warnings ${A_DEPS} GTest::gmock GTest::gtest_main)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${FUN_TEST_OUTPUT_DIRECTORY})
  # BINARIES MACRO=target ...: the test runs that real program, found through MACRO (its path).
  foreach(_binary IN LISTS A_BINARIES)
    string(REPLACE "=" ";" _pair "${_binary}")
    list(GET _pair 0 _macro)
    list(GET _pair 1 _target)
    target_compile_definitions(${name} PRIVATE ${_macro}="$<TARGET_FILE:${_target}>")
    add_dependencies(${name} ${_target})
  endforeach()
  if(A_DEFINES)
    target_compile_definitions(${name} PRIVATE ${A_DEFINES})
  endif()
  if(A_DEPENDS)
    add_dependencies(${name} ${A_DEPENDS})
  endif()
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 TEST_PREFIX "${A_TEST_PREFIX}"
                       PROPERTIES TIMEOUT ${A_TIMEOUT})
  # Labels are set once ctest has read the discovered list: handed to gtest_discover_tests'
  # PROPERTIES, a list of labels ("unit;interop") would be flattened into separate properties.
  set(_labels_file ${CMAKE_CURRENT_BINARY_DIR}/${name}_labels.cmake)
  file(WRITE ${_labels_file}
    "foreach(_t IN LISTS ${name}_TESTS)\n"
    "  set_tests_properties(\"\${_t}\" PROPERTIES LABELS \"${A_LABELS}\")\n"
    "endforeach()\n")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${_labels_file})
endfunction()

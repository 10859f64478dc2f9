// fun-doctor: explains what keeps Fun from working here. All logic lives in doctor.cc.
#include <iostream>
#include <string>
#include <vector>

#include "tools/doctor/doctor.h"
#include "tools/doctor/doctor_env.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  fun::doctor::RealDoctorEnv env;
  return fun::doctor::Run(args, fun::PathsInputFromEnvironment(), env, std::cout, std::cerr);
}

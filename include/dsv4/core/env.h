// Every DSV4_* environment switch the engine reads, in one table: its name, the values it takes and what it
// does. The readers (launch.cc, gemv.cu, attention_split.cu, the scheduler, the graph policy, logging, the
// server) each parse their own switch when first used, which may be late (the first kernel launch); the CLI calls
// check_environment() before it reads any weight, so a bad value fails at once, whatever the device.
#pragma once

#include <span>
#include <string>

namespace dsv4 {

struct EnvSwitch {
  const char* name;
  const char* values;                     // the accepted values, for messages and docs
  const char* what;                       // what it does
  bool (*accepts)(const std::string& v);  // whether a value is valid (as its reader takes it)
};

// The table (tests/unit/env_test.cc checks that every DSV4_* the sources read is in it).
std::span<const EnvSwitch> env_switches();

// Validates every switch that is set; throws kInvalidArgument naming the first bad one and its accepted
// values.
void check_environment();

}  // namespace dsv4

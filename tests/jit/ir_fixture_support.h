// IR modules shared by the JIT tests, kept as tests/testdata/<name>.ll (a data dependency of
// //tests:jit_test). Bazel runs a test from its runfiles tree, where that path resolves.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace codeheap::jit::testdata {

// The text of tests/testdata/<name>.ll; "" and a test failure if it cannot be read.
inline std::string ir(const std::string& name) {
  const std::string path = "tests/testdata/" + name + ".ll";
  std::ifstream file(path);
  if (!file) {
    ADD_FAILURE() << "cannot read " << path << ": is it in the test's data?";
    return {};
  }
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

}  // namespace codeheap::jit::testdata

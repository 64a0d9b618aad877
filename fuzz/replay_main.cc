// The corpus replay without libFuzzer: feeds every file named on the command line, and every
// file in a directory named there, to LLVMFuzzerTestOneInput once, in name order. A finding
// aborts (fuzz/check.h) or crashes; an unreadable file or no input at all fails too.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "codeheap/log.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  auto log = codeheap::logger("fuzz");
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    if (fs::is_directory(argv[i])) {
      for (const auto& entry : fs::directory_iterator(argv[i])) files.push_back(entry.path());
    } else {
      files.emplace_back(argv[i]);
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    log->error("usage: {} FILE|DIRECTORY...: no input to replay", argv[0]);
    return 2;
  }
  for (const fs::path& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      log->error("cannot read {}", file.string());
      return 1;
    }
    const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(in), {}};
    log->debug("replaying {} ({} bytes)", file.string(), bytes.size());
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  }
  log->info("replayed {} inputs", files.size());
  log->flush();
  // As libFuzzer does, leave without static destructors: the Lisp targets keep their runtime,
  // and its tier-up thread, for the whole process, and statics torn down under that thread
  // crashed the exit now and then. How a process ends is not what is replayed here.
  std::_Exit(0);
}

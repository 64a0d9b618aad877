"""cc_fuzz_target: one libFuzzer target, and the replay of its seed corpus as a test."""

def cc_fuzz_target(name, srcs, corpus, deps = [], **kwargs):
    """Declares `name`, `name_replay` and `name_corpus`.

    `name` is a libFuzzer binary under --config=fuzz (.bazelrc); in other configurations the
    same LLVMFuzzerTestOneInput behind replay_main, which runs the files (and directories) given
    as arguments. `name_replay` is a test that feeds it every file of `corpus`.

    Args:
      name: the target's name.
      srcs: sources defining LLVMFuzzerTestOneInput.
      corpus: the seed corpus files.
      deps: what srcs need.
      **kwargs: passed to the library, the binary and the test.
    """
    native.cc_library(
        name = name + "_lib",
        srcs = srcs,
        deps = deps + ["//fuzz:check"],
        alwayslink = True,
        **kwargs
    )
    native.filegroup(name = name + "_corpus", srcs = corpus)
    native.cc_binary(
        name = name,
        linkopts = select({
            "//fuzz:fuzzing": ["-fsanitize=fuzzer"],
            "//conditions:default": [],
        }),
        deps = [":" + name + "_lib"] + select({
            "//fuzz:fuzzing": [],
            "//conditions:default": ["//fuzz:replay_main"],
        }),
        **kwargs
    )
    native.cc_test(
        name = name + "_replay",
        size = "small",
        args = ["$(locations :%s_corpus)" % name],
        data = [":" + name + "_corpus"],
        deps = [
            ":" + name + "_lib",
            "//fuzz:replay_main",
        ],
        **kwargs
    )

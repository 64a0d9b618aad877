"""cc_stencils: stencils compiled by clang-19 at build time, as tables for CodeUnitBuilder.

See docs/stencils.md for the conventions a stencil source follows.
"""

# -fno-pic -mcmodel=medium: 64-bit constants (movabs, R_X86_64_64) with near calls and jumps
# (rel32) and 32-bit absolute references to read-only data, which the heap keeps below 2 GiB.
# Each function in a section of its own, unwind tables for every one of them, and nothing that
# needs a runtime the heap does not provide (stack protector, CET notes). Jump tables stay
# allowed: the tool copies them with the stencil's read-only data.
STENCIL_COPTS = [
    "--target=x86_64-linux-gnu",
    "-O2",
    "-fno-pic",
    "-mcmodel=medium",
    "-fno-stack-protector",
    "-fno-exceptions",
    "-funwind-tables",
    "-fasynchronous-unwind-tables",
    "-ffunction-sections",
    "-fdata-sections",
    "-fcf-protection=none",
    "-fno-addrsig",
    "-g0",
]

STENCIL_CXXOPTS = ["-std=c++20", "-fno-rtti"]

def cc_stencils(name, src, hdrs = [], copts = [], deps = [], **kwargs):
    """A cc_library `name` holding the stencils of `src` (C, or C++ if it ends in .cc).

    Its header `<package>/<name>.h` declares, in namespace `name` (every character outside
    [A-Za-z0-9_] replaced by '_'), `const codeheap::jit::StencilLibrary& library();` and the
    constants kStencil_<function> and kSymbol_<extern symbol>.

    Args:
      name: the library's name.
      src: the stencil source file.
      hdrs: headers `src` includes (found from the workspace root and the genfiles root).
      copts: extra clang-19 flags.
      deps: cc_library dependencies of the generated library.
      **kwargs: visibility, testonly, tags: passed to every rule.
    """
    is_cxx = src.endswith(".cc")
    flags = STENCIL_COPTS + (STENCIL_CXXOPTS if is_cxx else ["-std=gnu17"]) + copts
    package = native.package_name()
    native.genrule(
        name = name + "_object",
        srcs = [src] + hdrs,
        outs = [name + ".o"],
        cmd = "/usr/bin/clang-19 -x %s %s -I. -I$(GENDIR) -c $(location %s) -o $@" % (
            "c++" if is_cxx else "c",
            " ".join(flags),
            src,
        ),
        **kwargs
    )
    native.genrule(
        name = name + "_tables",
        srcs = [name + ".o"],
        outs = [name + ".h", name + ".cc"],
        tools = ["//jit:stencil_tool"],
        cmd = ("$(location //jit:stencil_tool) --library=//%s:%s --namespace=%s " +
               "--header=%s $(location %s.o) $(location %s.h) $(location %s.cc)") % (
            package,
            name,
            name,
            (package + "/" if package else "") + name + ".h",
            name,
            name,
            name,
        ),
        **kwargs
    )
    native.cc_library(
        name = name,
        srcs = [name + ".cc"],
        hdrs = [name + ".h"],
        deps = ["//jit:stencil"] + deps,
        **kwargs
    )

"""cc_static_archive: one static archive holding every object file of some cc_library targets."""

load("@bazel_tools//tools/cpp:toolchain_utils.bzl", "find_cpp_toolchain")

def _objects(library):
    # Position-independent objects when Bazel built them, so the archive links into PIE programs.
    return library.pic_objects or library.objects

def _cc_static_archive_impl(ctx):
    objects = []
    for dep in ctx.attr.deps:
        for linker_input in dep[CcInfo].linking_context.linker_inputs.to_list():
            for library in linker_input.libraries:
                objects.extend(_objects(library))
    cc_toolchain = find_cpp_toolchain(ctx)
    out = ctx.outputs.out

    # `q`, not `r`: members with the same base name (codeheap/error.o, jit/error.o) all stay.
    args = ctx.actions.args()
    args.add("qcsD")
    args.add(out)
    args.add_all(objects)
    ctx.actions.run(
        executable = cc_toolchain.ar_executable,
        arguments = [args],
        inputs = objects,
        tools = cc_toolchain.all_files,
        outputs = [out],
        mnemonic = "CcStaticArchive",
        progress_message = "Archiving %s" % out.short_path,
    )
    return [DefaultInfo(files = depset([out]), runfiles = ctx.runfiles(files = [out]))]

cc_static_archive = rule(
    implementation = _cc_static_archive_impl,
    doc = "Archives the object files of `deps` and of everything they depend on into `out`.",
    attrs = {
        "deps": attr.label_list(providers = [CcInfo]),
        "out": attr.output(mandatory = True),
        "_cc_toolchain": attr.label(default = Label("@bazel_tools//tools/cpp:current_cc_toolchain")),
    },
    toolchains = ["@bazel_tools//tools/cpp:toolchain_type"],
    fragments = ["cpp"],
)

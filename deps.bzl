"""codeheap_dependencies(): every external repository codeheap needs, in one call.

codeheap's own WORKSPACE calls it, and so does a downstream workspace that builds against
codeheap (docs/embedding.md, "From another Bazel workspace"):

    local_repository(name = "codeheap", path = "...")   # or http_archive(name = "codeheap", ...)
    load("@codeheap//:deps.bzl", "codeheap_dependencies")
    codeheap_dependencies()

It declares, unless the calling WORKSPACE already did:
  - the offline stand-ins for what Bazel 4's built-in WORKSPACE suffix would download
    (third_party/README.md): @rules_cc, @rules_java, @remote_coverage_tools from codeheap's
    third_party/, and @platforms from Debian's bazel-platforms;
  - @llvm: LLVM 19 from Debian's llvm-19-dev, with codeheap's third_party/system/llvm.BUILD.
Call it before anything else that declares repositories: Bazel's suffix only fills in what is
still missing, so these win.
"""

def _codeheap_directory_impl(repository_ctx):
    # The directory of `workspace_file`, wherever codeheap itself lives (the main workspace or
    # an external repository): a local_repository path would be relative to the main workspace.
    directory = repository_ctx.path(repository_ctx.attr.workspace_file).dirname
    for entry in directory.readdir():
        repository_ctx.symlink(entry, entry.basename)

_codeheap_directory = repository_rule(
    implementation = _codeheap_directory_impl,
    doc = "A repository made of the directory holding `workspace_file` (a label in codeheap).",
    attrs = {
        "workspace_file": attr.label(allow_single_file = True, mandatory = True),
    },
    local = True,
)

def _maybe(repository_rule, name, **kwargs):
    if not native.existing_rule(name):
        repository_rule(name = name, **kwargs)

def codeheap_dependencies():
    """Declares @rules_cc, @rules_java, @remote_coverage_tools, @platforms and @llvm."""
    for name in ["rules_cc", "rules_java", "remote_coverage_tools"]:
        _maybe(
            _codeheap_directory,
            name,
            # Label() resolves in codeheap's repository, whichever workspace calls this.
            workspace_file = Label("//third_party/%s:WORKSPACE" % name),
        )
    _maybe(native.local_repository, "platforms", path = "/usr/share/bazel/tools/platforms")
    _maybe(
        native.new_local_repository,
        "llvm",
        build_file = str(Label("//third_party/system:llvm.BUILD")),
        path = "/usr/lib/llvm-19",
    )

#!/usr/bin/env bash
# One naming convention across the layers: functions and methods are snake_case. What a source
# declares or defines (a name followed by "(" after a return type) must not be camelCase, unless it
# is one of the LLVM interface methods the project overrides, which keep LLVM's names.
set -uo pipefail
llvm_overrides='^(allocate|deallocate|modifyPassConfig|notifyFailed|notifyRemovingResources|notifyTransferringResources|notifyEmitted|notifyMaterializing|notifyObjectLoaded|notifyFreeingObject|allocateCodeSection|allocateDataSection|reserveAllocationSpace|needsToReserveAllocationSpace|registerEHFrames|deregisterEHFrames|finalizeMemory|getSymbolAddress|findSymbol|getPointerToNamedFunction|convertToErrorCode|log)$'
status=0
checked=0
for f in "$@"; do
  [[ "$f" == *.h || "$f" == *.cc ]] || continue
  checked=$((checked + 1))
  # Declarations: a type (words, ::, <>, *, &), a space, then a camelCase name and "(".
  while IFS= read -r hit; do
    name=$(sed -E 's/.*[ *&]([a-z]+[A-Z][A-Za-z0-9]*)\(.*/\1/' <<<"${hit#*:}")
    [[ "$name" =~ $llvm_overrides ]] && continue
    echo "$f:$hit: '$name' is camelCase; functions are snake_case (docs/design.md, Building)"
    status=1
  done < <(grep -nE '^\s*((static|virtual|inline|explicit|constexpr|friend)\s+)*[A-Za-z_][A-Za-z0-9_:<>,]*[*&]?\s+[*&]?[a-z]+[A-Z][A-Za-z0-9]*\(' "$f" |
    grep -vE '^\s*[0-9]+:\s*(return|else|case|delete|new|co_return|throw)\b')
done
if ((checked == 0)); then
  echo "naming_test: no sources given" >&2
  exit 2
fi
if ((status == 0)); then echo "naming_test: ${checked} sources declare snake_case functions"; fi
exit "$status"

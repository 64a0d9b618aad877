// stencil_tool: an ELF x86-64 object of stencils -> the C++ tables of jit/stencil.h.
//
//   stencil_tool --library=//pkg:name --namespace=name --header=pkg/name.h IN.o OUT.h OUT.cc
//
// Every global function defined in a section `.text.<its name>` (clang's -ffunction-sections;
// `.text.unlikely.<its name>` for a cold one) is one stencil. Stencils are numbered in name
// order, and so are the undefined symbols their holes refer to, so the numbering does not
// depend on the order of the source. For each stencil the tool copies its code, turns its
// relocations into holes, copies the read-only data sections it refers to (transitively, each
// once) into a blob of its own with the holes of that data, marks a final `jmp rel32` to a
// symbol as the tail jump, and keeps its .eh_frame FDE; the one CIE is emitted once per
// library. Anything the emitter could not place stops the build with a message on stderr
// naming the stencil, the relocation and its target.
//
// The generated header declares `const codeheap::jit::StencilLibrary& library();` and the
// constants kStencil_<fn> and kSymbol_<sym> (names with every character outside [A-Za-z0-9_]
// replaced by '_') in namespace `--namespace`, which cc_stencils sets to the target's name.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "jit/stencil.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/BinaryFormat/Dwarf.h"
#include "llvm/BinaryFormat/ELF.h"
#include "llvm/Object/ELF.h"
#include "llvm/Object/ELFObjectFile.h"
#include "llvm/Object/ObjectFile.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/LEB128.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/raw_ostream.h"

namespace {

using codeheap::jit::HoleKind;
using codeheap::jit::HoleTarget;
using llvm::StringRef;
using llvm::object::ELF64LEObjectFile;
using llvm::object::ELFRelocationRef;
using llvm::object::ELFSectionRef;
using llvm::object::ELFSymbolRef;
using llvm::object::SymbolRef;

[[noreturn]] void fail(const llvm::Twine& message) {
  std::fprintf(stderr, "stencil_tool: %s\n", message.str().c_str());
  std::exit(1);
}

template <typename T>
T check(llvm::Expected<T> value, const llvm::Twine& what) {
  if (!value) fail(what + ": " + llvm::toString(value.takeError()));
  return std::move(*value);
}

std::string identifier(StringRef name) {
  std::string out = name.str();
  for (char& c : out)
    if (!llvm::isAlnum(c) && c != '_') c = '_';
  return out;
}

struct Hole {
  uint32_t offset = 0;
  HoleKind kind = HoleKind::kAbs64;
  HoleTarget target = HoleTarget::kSymbol;
  std::string symbol;  // for HoleTarget::kSymbol
  int64_t addend = 0;
  bool branch = false;
};

struct Stencil {
  std::string name;
  llvm::object::SectionRef text;
  std::vector<uint8_t> code;
  std::vector<Hole> holes;
  std::vector<uint8_t> rodata;
  uint64_t rodata_align = 1;
  std::vector<Hole> rodata_holes;
  std::map<uint64_t, uint64_t> rodata_offsets;  // section index -> offset in `rodata`
  int32_t tail_jump_hole = -1;
  std::vector<uint8_t> fde;
};

class Object {
 public:
  explicit Object(const std::string& path) : path_(path) {
    auto buffer = llvm::MemoryBuffer::getFile(path);
    if (!buffer) fail(path + ": " + buffer.getError().message());
    buffer_ = std::move(*buffer);
    auto object =
        check(llvm::object::ObjectFile::createObjectFile(buffer_->getMemBufferRef()), path);
    elf_.reset(llvm::dyn_cast<ELF64LEObjectFile>(object.release()));
    if (!elf_ || elf_->getArch() != llvm::Triple::x86_64 || !elf_->isRelocatableObject())
      fail(path + ": not an ELF x86-64 relocatable object");
    for (ELFSectionRef section : elf_->sections()) {
      auto target = check(section.getRelocatedSection(), path + ": relocations");
      if (target != elf_->section_end()) relocations_.emplace(target->getIndex(), section);
    }
  }

  // The stencils, by name, with code, holes, read-only data and tail jump; then their FDEs.
  std::vector<Stencil> stencils() {
    std::vector<Stencil> stencils;
    for (ELFSymbolRef symbol : elf_->symbols()) {
      const uint32_t flags = check(symbol.getFlags(), path_ + ": symbol flags");
      if (symbol.getELFType() != llvm::ELF::STT_FUNC || (flags & SymbolRef::SF_Undefined) ||
          !(flags & (SymbolRef::SF_Global | SymbolRef::SF_Weak)))
        continue;
      Stencil stencil;
      stencil.name = check(symbol.getName(), path_ + ": symbol name").str();
      stencil.text = *check(symbol.getSection(), "stencil '" + stencil.name + "'");
      // .text.<name>, or .text.unlikely.<name> (cold), .text.hot.<name>, ...
      const StringRef section = section_name(stencil.text);
      if (!section.starts_with(".text.") || !section.ends_with("." + stencil.name) ||
          check(symbol.getValue(), path_) != 0)
        fail("stencil '" + stencil.name + "': defined in section '" + section +
             "', expected at the start of '.text." + stencil.name +
             "' (compile with -ffunction-sections)");
      stencils.push_back(std::move(stencil));
    }
    std::sort(stencils.begin(), stencils.end(),
              [](const Stencil& a, const Stencil& b) { return a.name < b.name; });
    for (Stencil& stencil : stencils) {
      StringRef bytes = check(stencil.text.getContents(), "stencil '" + stencil.name + "'");
      stencil.code.assign(bytes.bytes_begin(), bytes.bytes_end());
      stencil.holes = holes_of(stencil, stencil.text, 0);
      mark_tail_jump(stencil);
    }
    read_eh_frame(stencils);
    return stencils;
  }

  const std::vector<uint8_t>& cie() const { return cie_; }

 private:
  StringRef section_name(const ELFSectionRef& section) const {
    return check(section.getName(), path_ + ": section name");
  }

  static bool is_read_only_data(const ELFSectionRef& section) {
    const uint64_t flags = section.getFlags();
    return section.getType() == llvm::ELF::SHT_PROGBITS && (flags & llvm::ELF::SHF_ALLOC) &&
           !(flags & (llvm::ELF::SHF_WRITE | llvm::ELF::SHF_EXECINSTR | llvm::ELF::SHF_TLS));
  }

  // The holes of `section` (the stencil's code, or one of its read-only data sections placed
  // at `base` in its blob), copying every read-only data section they reach into the blob.
  std::vector<Hole> holes_of(Stencil& stencil, const ELFSectionRef& section, uint64_t base) {
    std::vector<Hole> holes;
    auto found = relocations_.find(section.getIndex());
    if (found == relocations_.end()) return holes;
    for (const llvm::object::RelocationRef& ref : found->second.relocations()) {
      const ELFRelocationRef relocation(ref);
      holes.push_back(hole(stencil, section, relocation));
      holes.back().offset = static_cast<uint32_t>(base + relocation.getOffset());
    }
    std::sort(holes.begin(), holes.end(),
              [](const Hole& a, const Hole& b) { return a.offset < b.offset; });
    return holes;
  }

  Hole hole(Stencil& stencil, const ELFSectionRef& section, const ELFRelocationRef& relocation) {
    const uint32_t type = relocation.getType();
    const StringRef type_name = llvm::object::getELFRelocationTypeName(llvm::ELF::EM_X86_64, type);
    auto symbol_it = relocation.getSymbol();
    if (symbol_it == elf_->symbol_end())
      fail("stencil '" + stencil.name + "': relocation " + type_name + " without a symbol");
    const ELFSymbolRef symbol(*symbol_it);
    const StringRef target_name = check(symbol.getName(), path_ + ": symbol name");
    const std::string in_data =
        section == stencil.text ? ""
                                : (" in its read-only data '" + section_name(section) + "'").str();
    const std::string refused = "stencil '" + stencil.name + "': relocation " + type_name.str() +
                                " against '" + target_name.str() + "'" + in_data +
                                " cannot be placed (";
    auto refuse = [&](const llvm::Twine& why) -> Hole { fail(refused + why + ")"); };

    Hole hole;
    hole.addend = check(relocation.getAddend(), path_ + ": addend");
    const uint64_t size = type == llvm::ELF::R_X86_64_64 ? 8 : 4;
    if (relocation.getOffset() + size > section.getSize())
      return refuse("beyond its section's end");
    switch (type) {
      case llvm::ELF::R_X86_64_64:
        hole.kind = HoleKind::kAbs64;
        break;
      case llvm::ELF::R_X86_64_PC32:
        hole.kind = HoleKind::kPcRel32;
        break;
      case llvm::ELF::R_X86_64_PLT32:
        hole.kind = HoleKind::kPcRel32;
        hole.branch = true;
        break;
      case llvm::ELF::R_X86_64_32:
        hole.kind = HoleKind::kAbs32;
        break;
      case llvm::ELF::R_X86_64_32S:
        hole.kind = HoleKind::kAbs32S;
        break;
      case llvm::ELF::R_X86_64_GOTPCREL:
      case llvm::ELF::R_X86_64_GOTPCRELX:
      case llvm::ELF::R_X86_64_REX_GOTPCRELX:
      case llvm::ELF::R_X86_64_GOTPC32:
      case llvm::ELF::R_X86_64_GOT32:
        return refuse("it needs a GOT; compile with -fno-pic");
      case llvm::ELF::R_X86_64_TPOFF32:
      case llvm::ELF::R_X86_64_TPOFF64:
      case llvm::ELF::R_X86_64_GOTTPOFF:
      case llvm::ELF::R_X86_64_TLSGD:
      case llvm::ELF::R_X86_64_TLSLD:
      case llvm::ELF::R_X86_64_DTPOFF32:
      case llvm::ELF::R_X86_64_DTPOFF64:
        return refuse("thread-local storage");
      default:
        return refuse("unsupported relocation type; compile with -fno-pic -mcmodel=medium");
    }

    const uint32_t flags = check(symbol.getFlags(), path_ + ": symbol flags");
    if (flags & SymbolRef::SF_Undefined) {
      if (symbol.getELFType() == llvm::ELF::STT_TLS) return refuse("thread-local storage");
      hole.target = HoleTarget::kSymbol;
      hole.symbol = target_name.str();
      return hole;
    }
    auto target_it = check(symbol.getSection(), path_ + ": symbol section");
    if (target_it == elf_->section_end()) return refuse("an absolute or common symbol");
    const ELFSectionRef target(*target_it);
    const uint64_t value = symbol.getELFType() == llvm::ELF::STT_SECTION
                               ? 0
                               : check(symbol.getValue(), path_ + ": symbol value");
    if (target == stencil.text) {
      hole.target = HoleTarget::kCode;
      hole.addend += static_cast<int64_t>(value);
      return hole;
    }
    if (is_read_only_data(target)) {
      hole.target = HoleTarget::kReadOnly;
      hole.addend += static_cast<int64_t>(place_read_only(stencil, target) + value);
      return hole;
    }
    const StringRef where = section_name(target);
    if (target.getFlags() & llvm::ELF::SHF_EXECINSTR)
      return refuse("code in '" + where +
                    "': a stencil cannot call another stencil or a static function that was "
                    "not inlined; continuations are extern symbols");
    if (target.getFlags() & llvm::ELF::SHF_TLS) return refuse("thread-local storage");
    if (target.getFlags() & llvm::ELF::SHF_WRITE)
      return refuse("writable data in '" + where +
                    "': stencils may refer to read-only data only; pass mutable state through a "
                    "hole");
    return refuse("section '" + where + "' is not read-only data");
  }

  // The offset of read-only data `section` in the stencil's blob, copying it (and what its own
  // relocations reach) the first time.
  uint64_t place_read_only(Stencil& stencil, const ELFSectionRef& section) {
    auto [it, added] = stencil.rodata_offsets.emplace(section.getIndex(), 0);
    if (!added) return it->second;
    const uint64_t align = std::max<uint64_t>(section.getAlignment().value(), 1);
    const uint64_t offset = llvm::alignTo(stencil.rodata.size(), align);
    it->second = offset;
    stencil.rodata_align = std::max(stencil.rodata_align, align);
    StringRef bytes = check(section.getContents(), path_ + ": section contents");
    stencil.rodata.resize(offset);
    stencil.rodata.insert(stencil.rodata.end(), bytes.bytes_begin(), bytes.bytes_end());
    std::vector<Hole> holes = holes_of(stencil, section, offset);
    stencil.rodata_holes.insert(stencil.rodata_holes.end(), holes.begin(), holes.end());
    return offset;
  }

  static void mark_tail_jump(Stencil& stencil) {
    const size_t size = stencil.code.size();
    if (size < 5 || stencil.code[size - 5] != 0xE9) return;
    for (size_t i = 0; i < stencil.holes.size(); ++i) {
      const Hole& hole = stencil.holes[i];
      if (hole.offset == size - 4 && hole.kind == HoleKind::kPcRel32 &&
          hole.target == HoleTarget::kSymbol && hole.addend == -4)
        stencil.tail_jump_hole = static_cast<int32_t>(i);
    }
  }

  // One CIE (augmentation "zR", pointers pcrel|sdata4) and one FDE per function, each FDE
  // relocated by R_X86_64_PC32 against its function's section: clang's output. Anything else
  // would need a general .eh_frame linker, which the emitter is not.
  void read_eh_frame(std::vector<Stencil>& stencils) {
    std::optional<ELFSectionRef> eh_frame;
    for (ELFSectionRef section : elf_->sections())
      if (section_name(section) == ".eh_frame") eh_frame = section;
    if (!eh_frame) return;
    const StringRef bytes = check(eh_frame->getContents(), path_ + ": .eh_frame");
    auto u32 = [&](uint64_t at) {
      return llvm::support::endian::read32le(bytes.bytes_begin() + at);
    };
    std::map<uint64_t, ELFRelocationRef> relocations;  // by offset in .eh_frame
    if (auto found = relocations_.find(eh_frame->getIndex()); found != relocations_.end())
      for (const llvm::object::RelocationRef& ref : found->second.relocations())
        relocations.emplace(ref.getOffset(), ELFRelocationRef(ref));

    std::optional<uint64_t> cie_at;
    for (uint64_t at = 0; at + 4 <= bytes.size();) {
      const uint64_t length = u32(at);
      if (length == 0) break;
      const uint64_t end = at + 4 + length;
      if (length == 0xffffffff || end > bytes.size() || length < 12)
        fail(path_ + ": .eh_frame record at " + llvm::Twine(at) + " is malformed or 64-bit");
      auto first = relocations.lower_bound(at);
      const uint32_t id = u32(at + 4);
      if (id == 0) {
        if (cie_at) fail(path_ + ": .eh_frame has more than one CIE; the emitter needs one");
        if (first != relocations.end() && first->first < end)
          fail(path_ + ": .eh_frame CIE has relocations (a personality routine?)");
        check_cie(bytes.slice(at, end));
        cie_at = at;
        cie_.assign(bytes.bytes_begin() + at, bytes.bytes_begin() + end);
      } else {
        if (!cie_at || at + 4 - id != *cie_at)
          fail(path_ + ": .eh_frame FDE at " + llvm::Twine(at) + " does not use the one CIE");
        read_fde(stencils, bytes.slice(at, end), at, first, relocations.end());
      }
      at = end;
    }
  }

  static void check_cie(StringRef cie) {
    const uint8_t* p = cie.bytes_begin() + 8;
    const uint8_t* end = cie.bytes_end();
    const uint8_t version = *p++;
    const StringRef augmentation(reinterpret_cast<const char*>(p));
    if ((version != 1 && version != 3) || augmentation != "zR")
      fail(".eh_frame CIE: version " + llvm::Twine(version) + ", augmentation '" + augmentation +
           "'; expected version 1 or 3 and 'zR'");
    p += augmentation.size() + 1;
    unsigned n = 0;
    const char* error = nullptr;
    llvm::decodeULEB128(p, &n, end, &error);  // code alignment factor
    p += n;
    llvm::decodeSLEB128(p, &n, end, &error);  // data alignment factor
    p += n;
    if (version == 1) {
      ++p;
    } else {
      llvm::decodeULEB128(p, &n, end, &error);
      p += n;
    }
    llvm::decodeULEB128(p, &n, end, &error);  // augmentation data length
    p += n;
    if (error != nullptr || p >= end ||
        *p != (llvm::dwarf::DW_EH_PE_pcrel | llvm::dwarf::DW_EH_PE_sdata4))
      fail(".eh_frame CIE: FDE pointers are not encoded pcrel|sdata4 (0x1b)");
  }

  template <typename It>
  void read_fde(std::vector<Stencil>& stencils, StringRef fde, uint64_t at, It first, It last) {
    const std::string where = (path_ + ": .eh_frame FDE at " + llvm::Twine(at)).str();
    if (first == last || first->first != at + codeheap::jit::kFdePcBegin ||
        first->second.getType() != llvm::ELF::R_X86_64_PC32)
      fail(where + ": pc_begin is not relocated by R_X86_64_PC32");
    if (auto next = std::next(first); next != last && next->first < at + fde.size())
      fail(where + ": more than one relocation (an LSDA?)");
    const ELFSymbolRef symbol(*first->second.getSymbol());
    auto section = check(symbol.getSection(), where);
    const uint64_t value =
        symbol.getELFType() == llvm::ELF::STT_SECTION ? 0 : check(symbol.getValue(), where);
    auto stencil = std::find_if(stencils.begin(), stencils.end(),
                                [&](const Stencil& s) { return s.text == *section; });
    if (stencil == stencils.end()) return;  // an unreferenced local function
    const uint32_t pc_range = llvm::support::endian::read32le(fde.bytes_begin() + kFdePcRange);
    if (value + check(first->second.getAddend(), where) != 0 || pc_range > stencil->code.size())
      fail(where + ": does not cover stencil '" + stencil->name + "' from its start");
    if (fde.size() <= 16 || fde.bytes_begin()[16] != 0)
      fail(where + ": has augmentation data (an LSDA?)");
    if (!stencil->fde.empty()) fail("stencil '" + stencil->name + "': more than one FDE");
    stencil->fde.assign(fde.bytes_begin(), fde.bytes_end());
    std::fill(stencil->fde.begin() + kFdeCiePointer, stencil->fde.begin() + kFdePcRange, 0);
  }

  static constexpr uint32_t kFdeCiePointer = codeheap::jit::kFdeCiePointer;
  static constexpr uint32_t kFdePcRange = codeheap::jit::kFdePcRange;

  std::string path_;
  std::unique_ptr<llvm::MemoryBuffer> buffer_;
  std::unique_ptr<ELF64LEObjectFile> elf_;
  std::map<uint64_t, ELFSectionRef> relocations_;  // relocated section -> its .rela
  std::vector<uint8_t> cie_;
};

// ---------------------------------------------------------------------------------------------
// Output

const char* kind_name(HoleKind kind) {
  switch (kind) {
    case HoleKind::kAbs64:
      return "kAbs64";
    case HoleKind::kPcRel32:
      return "kPcRel32";
    case HoleKind::kAbs32:
      return "kAbs32";
    case HoleKind::kAbs32S:
      return "kAbs32S";
  }
  return "";
}

const char* target_name(HoleTarget target) {
  switch (target) {
    case HoleTarget::kSymbol:
      return "kSymbol";
    case HoleTarget::kReadOnly:
      return "kReadOnly";
    case HoleTarget::kCode:
      return "kCode";
  }
  return "";
}

void write_bytes(llvm::raw_ostream& os, StringRef name, const std::vector<uint8_t>& bytes) {
  os << "constexpr uint8_t " << name << "[] = {";
  for (size_t i = 0; i < bytes.size(); ++i) {
    os << (i % 16 == 0 ? "\n    " : " ");
    os << llvm::format_hex(bytes[i], 4) << ",";
  }
  os << "\n};\n";
}

void write_holes(llvm::raw_ostream& os, StringRef name, const std::vector<Hole>& holes,
                 const std::map<std::string, size_t>& symbols) {
  os << "constexpr Hole " << name << "[] = {\n";
  for (const Hole& hole : holes) {
    const size_t symbol = hole.target == HoleTarget::kSymbol ? symbols.at(hole.symbol) : 0;
    os << "    {" << hole.offset << ", HoleKind::" << kind_name(hole.kind)
       << ", HoleTarget::" << target_name(hole.target) << ", " << symbol << ", " << hole.addend
       << ", " << (hole.branch ? "true" : "false") << "},";
    if (hole.target == HoleTarget::kSymbol) os << "  // " << hole.symbol;
    os << "\n";
  }
  os << "};\n";
}

void write_outputs(const std::string& library, const std::string& ns, const std::string& header,
                   const std::string& input, const std::vector<Stencil>& stencils,
                   const std::vector<uint8_t>& cie, const std::string& h_path,
                   const std::string& cc_path) {
  std::map<std::string, size_t> symbols;  // sorted by name
  for (const Stencil& stencil : stencils) {
    for (const auto* holes : {&stencil.holes, &stencil.rodata_holes})
      for (const Hole& hole : *holes)
        if (hole.target == HoleTarget::kSymbol) symbols.emplace(hole.symbol, 0);
  }
  size_t index = 0;
  for (auto& [name, i] : symbols) i = index++;
  if (stencils.size() > UINT16_MAX || symbols.size() > UINT16_MAX)
    fail(input + ": more than 65535 stencils or symbols");

  std::set<std::string> constants;
  auto constant = [&](StringRef prefix, StringRef name) {
    std::string id = (prefix + identifier(name)).str();
    if (!constants.insert(id).second)
      fail(input + ": two names give the constant " + id + "; rename one");
    return id;
  };

  std::error_code ec;
  llvm::raw_fd_ostream h(h_path, ec, llvm::sys::fs::OF_Text);
  if (ec) fail(h_path + ": " + ec.message());
  h << "// Generated by //jit:stencil_tool for " << library << ". Do not edit.\n"
    << "#pragma once\n\n#include <cstdint>\n\n#include \"jit/stencil.h\"\n\n"
    << "namespace " << ns << " {\n\n"
    << "const codeheap::jit::StencilLibrary& library();\n\n";
  for (size_t i = 0; i < stencils.size(); ++i)
    h << "inline constexpr uint16_t " << constant("kStencil_", stencils[i].name) << " = " << i
      << ";\n";
  h << "\n";
  for (const auto& [name, i] : symbols)
    h << "inline constexpr uint16_t " << constant("kSymbol_", name) << " = " << i << ";\n";
  h << "\n}  // namespace " << ns << "\n";

  llvm::raw_fd_ostream cc(cc_path, ec, llvm::sys::fs::OF_Text);
  if (ec) fail(cc_path + ": " + ec.message());
  cc << "// Generated by //jit:stencil_tool for " << library << ". Do not edit.\n"
     << "#include \"" << header << "\"\n\n"
     << "namespace " << ns << " {\nnamespace {\n\n"
     << "using codeheap::jit::Hole;\nusing codeheap::jit::HoleKind;\n"
     << "using codeheap::jit::HoleTarget;\nusing codeheap::jit::Stencil;\n\n";
  auto array = [](const auto& items, const std::string& name) {
    return items.empty() ? std::string("nullptr") : name;
  };
  for (size_t i = 0; i < stencils.size(); ++i) {
    const Stencil& s = stencils[i];
    const std::string n = std::to_string(i);
    cc << "// " << s.name << "\n";
    write_bytes(cc, "kCode" + n, s.code);
    if (!s.holes.empty()) write_holes(cc, "kHoles" + n, s.holes, symbols);
    if (!s.rodata.empty()) write_bytes(cc, "kRodata" + n, s.rodata);
    if (!s.rodata_holes.empty()) write_holes(cc, "kRodataHoles" + n, s.rodata_holes, symbols);
    if (!s.fde.empty()) write_bytes(cc, "kFde" + n, s.fde);
    cc << "\n";
  }
  cc << "constexpr Stencil kStencils[] = {\n";
  for (size_t i = 0; i < stencils.size(); ++i) {
    const Stencil& s = stencils[i];
    const std::string n = std::to_string(i);
    const bool shared =
        std::all_of(s.rodata_holes.begin(), s.rodata_holes.end(),
                    [](const Hole& h) { return h.target == HoleTarget::kReadOnly; });
    cc << "    {.name = \"" << s.name << "\", .code = kCode" << n
       << ", .code_size = " << s.code.size() << ", .holes = " << array(s.holes, "kHoles" + n)
       << ", .hole_count = " << s.holes.size()
       << ",\n     .rodata = " << array(s.rodata, "kRodata" + n)
       << ", .rodata_size = " << s.rodata.size() << ", .rodata_align = " << s.rodata_align
       << ", .rodata_holes = " << array(s.rodata_holes, "kRodataHoles" + n)
       << ", .rodata_hole_count = " << s.rodata_holes.size()
       << ", .rodata_shared = " << (shared ? "true" : "false")
       << ",\n     .tail_jump_hole = " << s.tail_jump_hole
       << ", .fde = " << array(s.fde, "kFde" + n) << ", .fde_size = " << s.fde.size() << "},\n";
  }
  cc << "};\n\n";
  if (!symbols.empty()) {
    cc << "constexpr const char* kSymbols[] = {\n";
    for (const auto& [name, i] : symbols) cc << "    \"" << name << "\",\n";
    cc << "};\n\n";
  }
  if (!cie.empty()) write_bytes(cc, "kCie", cie);
  cc << "\nconstexpr codeheap::jit::StencilLibrary kLibrary = {\n"
     << "    .name = \"" << library << "\",\n"
     << "    .stencils = " << array(stencils, "kStencils")
     << ",\n    .stencil_count = " << stencils.size()
     << ",\n    .symbols = " << array(symbols, "kSymbols")
     << ",\n    .symbol_count = " << symbols.size() << ",\n    .cie = " << array(cie, "kCie")
     << ",\n    .cie_size = " << cie.size() << ",\n};\n\n"
     << "}  // namespace\n\n"
     << "const codeheap::jit::StencilLibrary& library() { return kLibrary; }\n\n"
     << "}  // namespace " << ns << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::string library, ns, header;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    StringRef arg = argv[i];
    if (arg.consume_front("--library=")) {
      library = arg.str();
    } else if (arg.consume_front("--namespace=")) {
      ns = identifier(arg);
    } else if (arg.consume_front("--header=")) {
      header = arg.str();
    } else {
      paths.push_back(arg.str());
    }
  }
  if (library.empty() || ns.empty() || header.empty() || paths.size() != 3)
    fail(
        "usage: stencil_tool --library=//pkg:name --namespace=name --header=pkg/name.h "
        "IN.o OUT.h OUT.cc");
  Object object(paths[0]);
  const std::vector<Stencil> stencils = object.stencils();
  if (stencils.empty()) fail(paths[0] + ": no stencil (a global function in .text.<name>)");
  write_outputs(library, ns, header, paths[0], stencils, object.cie(), paths[1], paths[2]);
  return 0;
}

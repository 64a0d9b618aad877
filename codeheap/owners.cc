#include "codeheap/owners.h"

#include <cassert>
#include <utility>

namespace codeheap {

OwnerId OwnerTable::add(std::string name) {
  const OwnerId id = next_id_++;
  records_.emplace(id, Record{std::move(name)});
  return id;
}

bool OwnerTable::retire(OwnerId owner) {
  auto it = records_.find(owner);
  if (it == records_.end()) return false;
  it->second.retired = true;
  erase_if_gone(it);
  return true;
}

bool OwnerTable::accepts(OwnerId owner) const {
  if (owner == kNoOwner) return true;
  auto it = records_.find(owner);
  return it != records_.end() && !it->second.retired;
}

void OwnerTable::on_allocate(OwnerId owner, size_t bytes) {
  if (owner == kNoOwner) return;
  Record& r = records_.at(owner);
  ++r.live_blocks;
  r.live_bytes += bytes;
}

void OwnerTable::on_quarantine(OwnerId owner, size_t bytes) {
  if (owner == kNoOwner) return;
  Record& r = records_.at(owner);
  --r.live_blocks;
  r.live_bytes -= bytes;
  ++r.quarantined_blocks;
  r.quarantined_bytes += bytes;
}

void OwnerTable::on_free(OwnerId owner, size_t bytes, BlockState from) {
  if (owner == kNoOwner) return;
  auto it = records_.find(owner);
  assert(it != records_.end());
  Record& r = it->second;
  if (from == BlockState::kLive) {
    --r.live_blocks;
    r.live_bytes -= bytes;
  } else {
    --r.quarantined_blocks;
    r.quarantined_bytes -= bytes;
  }
  erase_if_gone(it);
}

void OwnerTable::erase_if_gone(std::map<OwnerId, Record>::iterator it) {
  const Record& r = it->second;
  if (r.retired && r.live_blocks == 0 && r.quarantined_blocks == 0) records_.erase(it);
}

std::vector<OwnerStats> OwnerTable::snapshot() const {
  std::vector<OwnerStats> owners;
  owners.reserve(records_.size());
  for (const auto& [id, r] : records_) {
    OwnerStats s;
    s.id = id;
    s.name = r.name;
    s.retired = r.retired;
    s.live_blocks = r.live_blocks;
    s.live_bytes = r.live_bytes;
    s.quarantined_blocks = r.quarantined_blocks;
    s.quarantined_bytes = r.quarantined_bytes;
    owners.push_back(std::move(s));
  }
  return owners;
}

}  // namespace codeheap

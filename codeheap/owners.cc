#include "codeheap/owners.h"

#include <cassert>
#include <utility>

namespace codeheap {

OwnerId OwnerTable::add(std::string name) {
  const OwnerId id = next_id_++;
  records_.emplace(id, Record{std::move(name)});
  return id;
}

bool OwnerTable::retire(OwnerId owner, std::function<void()> on_gone) {
  auto it = records_.find(owner);
  if (it == records_.end()) return false;
  it->second.retired = true;
  if (on_gone) it->second.on_gone = std::move(on_gone);
  erase_if_gone(it);
  return true;
}

std::function<void()> OwnerTable::take_on_gone_if_emptied_by(OwnerId owner, size_t quarantined) {
  auto it = records_.find(owner);
  if (it == records_.end()) return {};
  Record& r = it->second;
  if (!r.retired || r.live_blocks != 0 || r.quarantined_blocks != quarantined) return {};
  return std::exchange(r.on_gone, {});
}

bool OwnerTable::has_on_gone(OwnerId owner) const {
  auto it = records_.find(owner);
  return it != records_.end() && static_cast<bool>(it->second.on_gone);
}

std::vector<std::function<void()>> OwnerTable::take_ready() { return std::exchange(ready_, {}); }

std::vector<std::function<void()>> OwnerTable::take_all_pending() {
  std::vector<std::function<void()>> all = take_ready();
  for (auto& [id, r] : records_) {
    if (r.on_gone) all.push_back(std::exchange(r.on_gone, {}));
  }
  return all;
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
  Record& r = it->second;
  if (r.retired && r.live_blocks == 0 && r.quarantined_blocks == 0) {
    if (r.on_gone) ready_.push_back(std::move(r.on_gone));
    records_.erase(it);
  }
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

#include "codeheap/owners.h"

#include <algorithm>
#include <cassert>
#include <utility>

namespace codeheap {

OwnerRecord& OwnerTable::add(std::string name) {
  const OwnerId id = next_id_++;
  OwnerRecord record;
  record.stats.id = id;
  record.stats.name = std::move(name);
  return records_.emplace(id, std::move(record)).first->second;
}

void OwnerTable::remove(OwnerId owner) {
  [[maybe_unused]] const size_t erased = records_.erase(owner);
  assert(erased == 1);
}

bool OwnerTable::retire(OwnerId owner, std::function<void()> on_gone) {
  auto it = records_.find(owner);
  if (it == records_.end()) return false;
  it->second.stats.retired = true;
  if (on_gone) it->second.on_gone = std::move(on_gone);
  erase_if_gone(it->second);
  return true;
}

OwnerRecord* OwnerTable::accepting(OwnerId owner, bool& accepted) {
  accepted = true;
  if (owner == kNoOwner) return nullptr;
  auto it = records_.find(owner);
  if (it == records_.end() || it->second.stats.retired) {
    accepted = false;
    return nullptr;
  }
  return &it->second;
}

std::function<void()> OwnerTable::take_on_gone_if_emptied_by(OwnerRecord& r, size_t quarantined) {
  const OwnerStats& s = r.stats;
  if (!s.retired || s.live_blocks != 0 || s.quarantined_blocks != quarantined) return {};
  return std::exchange(r.on_gone, {});
}

std::vector<std::function<void()>> OwnerTable::take_ready() { return std::exchange(ready_, {}); }

std::vector<std::function<void()>> OwnerTable::take_all_pending() {
  std::vector<std::function<void()>> all = take_ready();
  // In registration order, as callers would expect of a teardown.
  std::vector<OwnerId> waiting;
  for (const auto& [id, r] : records_) {
    if (r.on_gone) waiting.push_back(id);
  }
  std::sort(waiting.begin(), waiting.end());
  for (OwnerId id : waiting) all.push_back(std::exchange(records_.at(id).on_gone, {}));
  return all;
}

void OwnerTable::on_allocate(OwnerRecord* owner, size_t bytes) {
  if (owner == nullptr) return;
  ++owner->stats.live_blocks;
  owner->stats.live_bytes += bytes;
}

void OwnerTable::on_quarantine(OwnerRecord* owner, size_t bytes) {
  if (owner == nullptr) return;
  OwnerStats& s = owner->stats;
  --s.live_blocks;
  s.live_bytes -= bytes;
  ++s.quarantined_blocks;
  s.quarantined_bytes += bytes;
}

void OwnerTable::on_free(OwnerRecord* owner, size_t bytes, BlockState from) {
  if (owner == nullptr) return;
  OwnerStats& s = owner->stats;
  if (from == BlockState::kLive) {
    --s.live_blocks;
    s.live_bytes -= bytes;
  } else {
    --s.quarantined_blocks;
    s.quarantined_bytes -= bytes;
  }
  erase_if_gone(*owner);
}

void OwnerTable::erase_if_gone(OwnerRecord& r) {
  const OwnerStats& s = r.stats;
  if (s.retired && s.live_blocks == 0 && s.quarantined_blocks == 0) {
    if (r.on_gone) ready_.push_back(std::move(r.on_gone));
    records_.erase(s.id);
  }
}

std::vector<OwnerStats> OwnerTable::snapshot() const {
  std::vector<OwnerStats> owners;
  owners.reserve(records_.size());
  for (const auto& [id, r] : records_) owners.push_back(r.stats);
  std::sort(owners.begin(), owners.end(),
            [](const OwnerStats& a, const OwnerStats& b) { return a.id < b.id; });
  return owners;
}

}  // namespace codeheap

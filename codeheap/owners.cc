#include "codeheap/owners.h"

#include <algorithm>
#include <cassert>
#include <new>
#include <utility>

namespace codeheap {

OwnerTable::~OwnerTable() {
  std::vector<OwnerRecord*> records;
  records_.for_each([&](uintptr_t, OwnerRecord* r) { records.push_back(r); });
  for (OwnerRecord* r : records) {
    r->live.free_storage(*metadata_);
    metadata_->delete_node(r);
  }
}

void LiveBlocks::grow(NodePool& pool) {
  const uint32_t capacity = capacity_ * 2;
  auto* const grown =
      static_cast<Entry**>(pool.allocate_node(capacity * sizeof(Entry*), alignof(Entry*)));
  std::copy_n(data(), size_, grown);
  free_storage(pool);
  spill_ = grown;
  capacity_ = capacity;
}

void LiveBlocks::free_storage(NodePool& pool) {
  if (spill_ == nullptr) return;
  pool.deallocate_node(spill_, capacity_ * sizeof(Entry*), alignof(Entry*));
  spill_ = nullptr;
  capacity_ = kInline;
}

OwnerRecord& OwnerTable::add(std::string name) {
  // Default-initialized (every member has an initializer), so the record is not zeroed first
  // (docs/performance-notes.md, "Owner records not zeroed first").
  OwnerRecord* const record = metadata_->new_node<OwnerRecord>();
  record->stats.id = next_id_++;
  record->stats.name = std::move(name);
  records_.insert(record->stats.id, record);
  return *record;
}

void OwnerTable::remove(OwnerId owner) {
  OwnerRecord* const record = records_.find(owner);
  assert(record != nullptr);
  erase(*record);
}

void OwnerTable::erase(OwnerRecord& r) {
  records_.erase(r.stats.id);
  r.live.free_storage(*metadata_);
  metadata_->delete_node(&r);
}

bool OwnerTable::retire(OwnerId owner, std::function<void()> on_gone) {
  OwnerRecord* const record = owner == kNoOwner ? nullptr : records_.find(owner);
  if (record == nullptr) return false;
  retire(*record, std::move(on_gone));
  return true;
}

void OwnerTable::retire(OwnerRecord& record, std::function<void()> on_gone) {
  record.stats.retired = true;
  if (on_gone && record.on_gone) {
    // Retired again: the first callback still runs (it may deregister unwind tables), then this.
    record.on_gone = [first = std::move(record.on_gone), then = std::move(on_gone)] {
      first();
      then();
    };
  } else if (on_gone) {
    record.on_gone = std::move(on_gone);
  }
  erase_if_gone(record);
}

OwnerRecord* OwnerTable::accepting(OwnerId owner, bool& accepted) {
  accepted = true;
  if (owner == kNoOwner) return nullptr;
  OwnerRecord* const record = records_.find(owner);
  if (record == nullptr || record->stats.retired) {
    accepted = false;
    return nullptr;
  }
  return record;
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
  records_.for_each([&](uintptr_t id, const OwnerRecord* r) {
    if (r->on_gone) waiting.push_back(id);
  });
  std::sort(waiting.begin(), waiting.end());
  for (OwnerId id : waiting) all.push_back(std::exchange(records_.find(id)->on_gone, {}));
  return all;
}

void OwnerTable::erase_gone(OwnerRecord& r) {
  if (r.on_gone) ready_.push_back(std::move(r.on_gone));
  erase(r);
}

std::vector<OwnerStats> OwnerTable::snapshot() const {
  std::vector<OwnerStats> owners;
  owners.reserve(records_.size());
  records_.for_each([&](uintptr_t, const OwnerRecord* r) { owners.push_back(r->stats); });
  std::sort(owners.begin(), owners.end(),
            [](const OwnerStats& a, const OwnerStats& b) { return a.id < b.id; });
  return owners;
}

}  // namespace codeheap

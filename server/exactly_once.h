// ExactlyOnceFilter: remembers which (worker_id, sequence) pushes were applied, so a retried push
// (its response was lost, or the client timed out) is acknowledged without being applied twice.
//
// Each worker gets a sliding window of the last kWindow sequence numbers above its highest one;
// pushes may arrive out of order within the window. A sequence older than the window is reported
// as already seen: a client never has that many pushes in flight.
//
// Thread-safety: all methods are thread-safe.
#ifndef TESSERA_SERVER_EXACTLY_ONCE_H_
#define TESSERA_SERVER_EXACTLY_ONCE_H_

#include <bitset>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace tessera::server {

class ExactlyOnceFilter {
 public:
  static constexpr uint64_t kWindow = 4096;

  // Records (worker, sequence) and returns true if it was not seen before; false for a duplicate.
  bool Admit(uint64_t worker, uint64_t sequence);
  // Undoes Admit() for a push that could not be applied.
  void Forget(uint64_t worker, uint64_t sequence);
  size_t num_workers() const;

  // Checkpoint support: a compact byte image of the state, and its inverse.
  std::string Serialize() const;
  bool Deserialize(absl::string_view data);

 private:
  struct Window {
    uint64_t high = 0;             // highest sequence seen
    std::bitset<kWindow> seen;     // bit (s % kWindow) for s in (high - kWindow, high]
  };
  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, Window> windows_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tessera::server

#endif  // TESSERA_SERVER_EXACTLY_ONCE_H_

// DelayQueue: runs closures on one background thread, each at or after its due time. Used for
// retries with backoff and for work that must not run on gRPC callback threads (blocking RPCs).
// Thread-safe. The destructor runs nothing further and joins the thread.
#ifndef TESSERA_COMMON_DELAY_QUEUE_H_
#define TESSERA_COMMON_DELAY_QUEUE_H_

#include <functional>
#include <queue>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace tessera {

class DelayQueue {
 public:
  DelayQueue();
  ~DelayQueue();
  DelayQueue(const DelayQueue&) = delete;
  DelayQueue& operator=(const DelayQueue&) = delete;

  // Schedules `fn` to run after `delay` (0: as soon as possible). Never blocks.
  void RunAfter(absl::Duration delay, std::function<void()> fn);

 private:
  struct Item {
    absl::Time due;
    uint64_t order;
    std::function<void()> fn;
    bool operator>(const Item& o) const { return due != o.due ? due > o.due : order > o.order; }
  };
  void Loop();

  absl::Mutex mu_;
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> items_ ABSL_GUARDED_BY(mu_);
  uint64_t next_order_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace tessera

#endif  // TESSERA_COMMON_DELAY_QUEUE_H_

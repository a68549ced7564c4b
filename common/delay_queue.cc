#include "common/delay_queue.h"

#include "absl/time/clock.h"

namespace tessera {

DelayQueue::DelayQueue() : thread_([this] { Loop(); }) {}

DelayQueue::~DelayQueue() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void DelayQueue::RunAfter(absl::Duration delay, std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  items_.push(Item{absl::Now() + delay, next_order_++, std::move(fn)});
}

void DelayQueue::Loop() {
  for (;;) {
    std::function<void()> fn;
    {
      absl::MutexLock lock(&mu_);
      for (;;) {
        if (stop_) return;
        if (!items_.empty() && items_.top().due <= absl::Now()) break;
        const absl::Time wake = items_.empty() ? absl::Now() + absl::Milliseconds(100) : items_.top().due;
        mu_.AwaitWithDeadline(absl::Condition(
                                  +[](DelayQueue* q) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                    return q->stop_ || (!q->items_.empty() && q->items_.top().due <= absl::Now());
                                  },
                                  this),
                              std::min(wake, absl::Now() + absl::Milliseconds(100)));
      }
      fn = std::move(const_cast<Item&>(items_.top()).fn);
      items_.pop();
    }
    fn();
  }
}

}  // namespace tessera

// ThreadPool: a fixed set of threads running scheduled closures in FIFO order. Services use it to
// run handlers that block (fan-out RPCs, fsync) off gRPC's callback threads. Thread-safe; the
// destructor finishes the queued closures and joins the threads.
#ifndef TESSERA_COMMON_THREAD_POOL_H_
#define TESSERA_COMMON_THREAD_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace tessera {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues `fn`; never blocks.
  void Schedule(std::function<void()> fn);

 private:
  void Loop();
  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace tessera

#endif  // TESSERA_COMMON_THREAD_POOL_H_

// Server-side optimizers. An optimizer updates a run of `n` weights in place from their gradients,
// using `num_slots()` float slots per weight stored right after the weights in the same block of
// memory: slot k of weight i lives at slots[k * stride + i] (a sparse row is
// [w_0..w_{dim-1}][slot0_0..slot0_{dim-1}]... with stride = dim; a dense block has stride = block
// size), plus one uint32 step counter per run (Adam's bias correction counts steps per sparse row).
//
// With OptimizerSpec.average_decay > 0 the optimizer keeps one more slot, last: an exponential
// moving average of the weights (Polyak-Ruppert style averaging), updated after every Apply() and
// read by averaged pulls (average_slot()).
//
// Optimizers are immutable after construction; Apply() is thread-safe as long as callers do not
// update the same run concurrently (tables hold the run's lock).
#ifndef TESSERA_SERVER_OPTIMIZER_H_
#define TESSERA_SERVER_OPTIMIZER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "tessera/v1/table.pb.h"

namespace tessera::server {

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // Creates the optimizer named by spec.type() with defaults for unset fields, or
  // INVALID_ARGUMENT naming the bad field and value.
  static absl::StatusOr<std::unique_ptr<Optimizer>> Create(const tessera::v1::OptimizerSpec& spec);

  // "sgd", "adagrad", "adam" or "ftrl".
  virtual std::string name() const = 0;
  // Float slots per weight (0 for plain SGD), the average's included.
  virtual int num_slots() const = 0;
  // The slot holding the weights' moving average, or -1 when the optimizer keeps none.
  virtual int average_slot() const { return -1; }
  // True when Apply() reads the step counter (Adam); tables then store one per run.
  virtual bool uses_step() const { return false; }
  // Sets the slots of a fresh run of `n` weights `w`, already initialized (e.g. Adagrad's initial
  // accumulator; the average starts at the weights).
  virtual void InitSlots(const float* w, float* slots, int64_t n, int64_t stride) const = 0;
  // Applies gradient `g` to weights `w` (n of them) with slots `slots` and step counter `*step`.
  // `lr_scale` multiplies the learning rate.
  virtual void Apply(float* w, float* slots, int64_t stride, const float* g, int64_t n, float lr_scale,
                     uint32_t* step) const = 0;
};

}  // namespace tessera::server

#endif  // TESSERA_SERVER_OPTIMIZER_H_

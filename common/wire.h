// Wire codec for the data-path messages of tessera.v1.ParameterService (PullRequest, PushRequest,
// PushPullRequest and their responses) over gRPC byte buffers, without protobuf's copies.
//
// The bytes are exactly protobuf's: encoders write the fields in field-number order and omit
// defaults, as protobuf's serializer does, and decoders accept anything protobuf's parser accepts
// (fields in any order, repeated scalars where the last wins, unpacked keys, merged sub-messages,
// unknown fields and groups) and refuse what it refuses, with INVALID_ARGUMENT. So peers that use
// the generated protobuf classes and peers that use this codec talk to each other unchanged.
//
// Where the copies go:
// - Encoding: the small fields go into one header allocation; the big ones (keys, gradients) are
//   gRPC slices the caller provides: either referencing the caller's memory (PinnedSlice, no copy)
//   or a buffer the caller filled (AllocatedSlice). Payloads below kMinSliceBytes are cheaper
//   copied into the header (SmallOrPinned decides).
// - Decoding: a field that lies inside one received slice (and is suitably aligned) is used in
//   place; a field split across slices (gRPC hands messages over in slices of about 64 KiB) is
//   copied once, into storage the decoder owns.
// - Responses with values (PullResponse, PushPullResponse) are built by ValuesResponseWriter, which
//   hands out an uninitialized, aligned buffer inside the message for the store to write into.
//
// Thread-safety: the free functions are thread-safe and pure. RequestDecoder, ResponseDecoder and
// ValuesResponseWriter are not thread-safe; use one per message. Views they return stay valid
// while the object that returned them lives (the decoders hold references to the received slices).
#ifndef TESSERA_COMMON_WIRE_H_
#define TESSERA_COMMON_WIRE_H_

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace tessera::wire {

// Payloads smaller than this are copied into the message's header allocation: a separate slice
// (and, for pinned memory, its reference count) costs more than copying a few KiB.
inline constexpr size_t kMinSliceBytes = 4096;

// ---------------------------------------------------------------------------------------------
// Payload slices for the encoders.

// A slice over `size` bytes at `data` that gRPC reads in place. It holds a copy of `pin` until
// gRPC releases the slice, which can be after the call completed (a failed call whose bytes are
// still queued for the socket): whoever owns the memory must keep it alive until `pin` is
// destroyed. A null `pin` means the memory outlives every use (static data).
grpc::Slice PinnedSlice(const void* data, size_t size, std::shared_ptr<const void> pin);

// A new reference-counted slice of `size` uninitialized bytes; *data points at them (8-byte
// aligned) for the caller to fill before the slice is sent.
grpc::Slice AllocatedSlice(size_t size, char** data);

// Bytes of one big field: copied into the message (bytes set, slice empty) or referenced as a slice.
struct Payload {
  absl::string_view bytes;  // used when `slice` is empty
  grpc::Slice slice;

  static Payload Copy(absl::string_view bytes) { return Payload{bytes, grpc::Slice()}; }
  static Payload Reference(grpc::Slice slice) { return Payload{absl::string_view(), std::move(slice)}; }
  size_t size() const { return slice.size() != 0 ? slice.size() : bytes.size(); }
};

// Copy for small payloads, a PinnedSlice over the caller's memory otherwise.
Payload SmallOrPinned(absl::string_view bytes, const std::shared_ptr<const void>& pin);

// ---------------------------------------------------------------------------------------------
// Encoding requests (client side).

// The scalar fields of a PullRequest; keys go in a Payload of packed little-endian uint64.
struct PullHeader {
  absl::string_view table;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t shard_map_version = 0;
  bool averaged = false;
};

// The scalar fields of a PushRequest; keys and gradients go in Payloads.
struct PushHeader {
  absl::string_view table;
  uint64_t offset = 0;
  uint64_t worker_id = 0;
  uint64_t sequence = 0;
  uint64_t shard_map_version = 0;
  float learning_rate_scale = 0;
};

grpc::ByteBuffer EncodePullRequest(const PullHeader& header, Payload keys);
grpc::ByteBuffer EncodePushRequest(const PushHeader& header, Payload keys, Payload gradients);
// A PushPullRequest with `push` set and `pull` unset (read back what was pushed).
grpc::ByteBuffer EncodePushPullRequest(const PushHeader& header, Payload keys, Payload gradients);

// ---------------------------------------------------------------------------------------------
// Encoding responses (server side).

grpc::ByteBuffer EncodePushResponse(bool duplicate);

// Builds a PullResponse (or a PushPullResponse) whose values the caller writes in place: no zero
// fill and no copy of the values after they are written.
class ValuesResponseWriter {
 public:
  // `push_pull` selects PushPullResponse (with `duplicate`) over PullResponse.
  explicit ValuesResponseWriter(bool push_pull = false, bool duplicate = false)
      : push_pull_(push_pull), duplicate_(duplicate) {}
  ValuesResponseWriter(const ValuesResponseWriter&) = delete;
  ValuesResponseWriter& operator=(const ValuesResponseWriter&) = delete;

  // Room for `n` floats, 64-byte aligned and uninitialized, valid until Finish(). Call at most once.
  // Up to kSmallFloats are written to a buffer in this object and copied into the message (cheaper
  // than a separate allocation); more are written straight into the message.
  float* Allocate(size_t n);
  // The encoded message (with no values if Allocate was not called).
  grpc::ByteBuffer Finish();

 private:
  static constexpr size_t kSmallFloats = 64;
  const bool push_pull_;
  const bool duplicate_;
  size_t n_ = 0;
  bool allocated_ = false;
  grpc::Slice large_;  // header + values, when not small
  alignas(64) float small_[kSmallFloats];
};

// ---------------------------------------------------------------------------------------------
// Decoding.

// The bytes of one field, as pieces of the received slices (no copy).
class FieldBytes {
 public:
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const absl::InlinedVector<absl::string_view, 2>& pieces() const { return pieces_; }
  // Copies all bytes to `dst` (size() bytes).
  void CopyTo(char* dst) const;

  // Reads the bytes front to back in runs of any length.
  class Cursor {
   public:
    explicit Cursor(const FieldBytes& f) : f_(&f) {}
    // Copies the next `n` bytes to `dst`; they must exist.
    void Read(char* dst, size_t n);

   private:
    const FieldBytes* f_;
    size_t piece_ = 0, offset_ = 0;
  };

  void Clear() {
    pieces_.clear();
    size_ = 0;
  }
  void Append(absl::string_view piece) {
    if (piece.empty()) return;
    pieces_.push_back(piece);
    size_ += piece.size();
  }

 private:
  absl::InlinedVector<absl::string_view, 2> pieces_;
  size_t size_ = 0;
};

// Fields of a decoded PullRequest. Views stay valid while the RequestDecoder lives.
struct PullFields {
  absl::string_view table;
  absl::Span<const uint64_t> keys;  // 8-byte aligned
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t shard_map_version = 0;
  bool averaged = false;
};

// Fields of a decoded PushRequest. `gradients` is raw bytes (the service checks that they are
// whole float32 values); it starts 4-byte aligned.
struct PushFields {
  absl::string_view table;
  absl::Span<const uint64_t> keys;
  uint64_t offset = 0;
  absl::string_view gradients;
  uint64_t worker_id = 0;
  uint64_t sequence = 0;
  uint64_t shard_map_version = 0;
  float learning_rate_scale = 0;
};

// Decodes one received request. Malformed input gives INVALID_ARGUMENT naming the message, the
// byte offset and what was wrong.
class RequestDecoder {
 public:
  RequestDecoder() = default;
  RequestDecoder(const RequestDecoder&) = delete;
  RequestDecoder& operator=(const RequestDecoder&) = delete;

  absl::Status DecodePull(const grpc::ByteBuffer& buffer, PullFields* out);
  absl::Status DecodePush(const grpc::ByteBuffer& buffer, PushFields* out);
  // *has_pull says whether the request set `pull` (when false, *pull is untouched).
  absl::Status DecodePushPull(const grpc::ByteBuffer& buffer, PushFields* push, PullFields* pull, bool* has_pull);

  // Internal: holds the received slices, and copies of fields that were split or misaligned.
  struct Storage {
    std::vector<grpc::Slice> slices;
    std::vector<absl::string_view> chunks;
    std::vector<std::unique_ptr<uint64_t[]>> owned;
    absl::Status Take(const grpc::ByteBuffer& buffer);
    // A contiguous copy of `bytes` (8-byte aligned), or the bytes in place when they are one
    // piece starting at a multiple of `align`.
    absl::string_view Contiguous(const FieldBytes& bytes, size_t align);
  };

 private:
  Storage storage_;
};

// A decoded PullResponse, PushResponse or PushPullResponse.
struct ResponseFields {
  bool duplicate = false;
  FieldBytes values;
};

// Decodes one received response (client side); values are left in the received slices, for the
// caller to copy where they belong.
class ResponseDecoder {
 public:
  ResponseDecoder() = default;
  ResponseDecoder(const ResponseDecoder&) = delete;
  ResponseDecoder& operator=(const ResponseDecoder&) = delete;

  absl::Status DecodePull(const grpc::ByteBuffer& buffer, ResponseFields* out);
  absl::Status DecodePush(const grpc::ByteBuffer& buffer, ResponseFields* out);
  absl::Status DecodePushPull(const grpc::ByteBuffer& buffer, ResponseFields* out);

 private:
  RequestDecoder::Storage storage_;
};

// Test helpers: a ByteBuffer holding `bytes` cut into slices at `cuts` (ascending offsets).
grpc::ByteBuffer ToByteBuffer(absl::string_view bytes, absl::Span<const size_t> cuts = {});
// The bytes of `buffer`, concatenated.
std::string ToString(const grpc::ByteBuffer& buffer);

}  // namespace tessera::wire

#endif  // TESSERA_COMMON_WIRE_H_

#include "common/wire.h"

#include <grpc/slice.h>

#include <climits>
#include <cstring>

#include "absl/base/config.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

#if !defined(ABSL_IS_LITTLE_ENDIAN)
#error "Tessera's wire codec assumes a little-endian host"
#endif

namespace tessera::wire {
namespace {

// Wire types of the protobuf encoding.
constexpr uint32_t kVarint = 0, kFixed64 = 1, kLen = 2, kStartGroup = 3, kEndGroup = 4, kFixed32 = 5;
// Nesting limit for unknown groups, as protobuf's default recursion limit.
constexpr int kMaxDepth = 100;

constexpr uint32_t Tag(uint32_t field, uint32_t wire_type) { return (field << 3) | wire_type; }

// ---------------------------------------------------------------------------------------------
// Encoding

// A message under construction: small fields in one growing buffer, big payloads as slices that
// go between its bytes.
class Builder {
 public:
  size_t size() const { return small_.size() + slice_bytes_; }

  void Varint(uint64_t v) {
    while (v >= 0x80) {
      small_.push_back(static_cast<char>(v | 0x80));
      v >>= 7;
    }
    small_.push_back(static_cast<char>(v));
  }
  void Key(uint32_t field, uint32_t wire_type) { Varint(Tag(field, wire_type)); }
  void VarintField(uint32_t field, uint64_t v) {
    if (v == 0) return;
    Key(field, kVarint);
    Varint(v);
  }
  void FloatField(uint32_t field, float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof(bits));
    if (bits == 0) return;  // protobuf omits +0.0 only
    Key(field, kFixed32);
    char b[4];
    std::memcpy(b, &bits, 4);
    small_.insert(small_.end(), b, b + 4);
  }
  void BytesField(uint32_t field, Payload payload) {
    const size_t n = payload.size();
    if (n == 0) return;
    Key(field, kLen);
    Varint(n);
    if (payload.slice.size() == 0) {
      small_.insert(small_.end(), payload.bytes.data(), payload.bytes.data() + n);
    } else {
      slices_.push_back({small_.size(), std::move(payload.slice)});
      slice_bytes_ += n;
    }
  }
  void MessageField(uint32_t field, Builder&& inner) {
    Key(field, kLen);
    Varint(inner.size());
    const size_t shift = small_.size();
    small_.insert(small_.end(), inner.small_.begin(), inner.small_.end());
    for (auto& s : inner.slices_) slices_.push_back({s.cut + shift, std::move(s.slice)});
    slice_bytes_ += inner.slice_bytes_;
  }

  grpc::ByteBuffer Finish() {
    if (slices_.empty()) {
      if (small_.empty()) return grpc::ByteBuffer(nullptr, 0);
      grpc::Slice s(small_.data(), small_.size());
      return grpc::ByteBuffer(&s, 1);
    }
    // One allocation for all the small bytes, cut into sub-slices around the payloads.
    grpc::Slice header(small_.data(), small_.size());
    absl::InlinedVector<grpc::Slice, 5> out;
    size_t prev = 0;
    for (auto& s : slices_) {
      if (s.cut > prev) out.push_back(header.sub(prev, s.cut));
      out.push_back(std::move(s.slice));
      prev = s.cut;
    }
    if (small_.size() > prev) out.push_back(header.sub(prev, small_.size()));
    return grpc::ByteBuffer(out.data(), out.size());
  }

 private:
  struct Cut {
    size_t cut;  // the slice goes after small_[0, cut)
    grpc::Slice slice;
  };
  absl::InlinedVector<char, 128> small_;
  absl::InlinedVector<Cut, 2> slices_;
  size_t slice_bytes_ = 0;
};

void DeletePin(void* pin) { delete static_cast<std::shared_ptr<const void>*>(pin); }
void DeleteWords(void* words) { delete[] static_cast<uint64_t*>(words); }

Builder PushBuilder(const PushHeader& h, Payload keys, Payload gradients) {
  Builder b;
  b.BytesField(1, Payload::Copy(h.table));
  b.BytesField(2, std::move(keys));
  b.VarintField(3, h.offset);
  b.BytesField(4, std::move(gradients));
  b.VarintField(5, h.worker_id);
  b.VarintField(6, h.sequence);
  b.VarintField(7, h.shard_map_version);
  b.FloatField(8, h.learning_rate_scale);
  return b;
}

// ---------------------------------------------------------------------------------------------
// Decoding

// Reads a message spread over chunks (the received slices), front to back, within a limit.
class Reader {
 public:
  Reader(const absl::string_view* chunks, size_t num_chunks) : chunk_(chunks) {
    for (size_t i = 0; i < num_chunks; ++i) remaining_ += chunks[i].size();
    limit_ = remaining_;
    if (num_chunks > 0) {
      p_ = chunks[0].data();
      end_ = p_ + chunks[0].size();
    }
  }

  bool done() const { return remaining_ == 0; }
  size_t remaining() const { return remaining_; }
  size_t position() const { return base_ + (limit_ - remaining_); }

  // A reader over the next `n` bytes (which must be there); this one does not move.
  Reader Sub(size_t n) const {
    Reader r = *this;
    r.base_ = position();
    r.limit_ = r.remaining_ = n;
    return r;
  }

  bool ReadByte(uint8_t* b) {
    if (remaining_ == 0) return false;
    Normalize();
    *b = static_cast<uint8_t>(*p_++);
    --remaining_;
    return true;
  }

  // Up to 10 bytes; bits past 64 are dropped (as protobuf does).
  bool ReadVarint64(uint64_t* v) {
    uint64_t result = 0;
    for (int i = 0; i < 10; ++i) {
      uint8_t b;
      if (!ReadByte(&b)) return false;
      result |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
      if (b < 0x80) {
        *v = result;
        return true;
      }
    }
    return false;
  }
  // Tags: up to 5 bytes, bits past 32 dropped.
  bool ReadTag(uint32_t* tag) {
    uint32_t result = 0;
    for (int i = 0; i < 5; ++i) {
      uint8_t b;
      if (!ReadByte(&b)) return false;
      result |= static_cast<uint32_t>(b & 0x7f) << (7 * i);
      if (b < 0x80) {
        *tag = result;
        return true;
      }
    }
    return false;
  }
  // Lengths: up to 5 bytes, below 2^31 (protobuf refuses larger ones).
  bool ReadSize(size_t* size) {
    uint64_t result = 0;
    for (int i = 0; i < 5; ++i) {
      uint8_t b;
      if (!ReadByte(&b)) return false;
      if (i == 4 && b >= 8) return false;
      result |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
      if (b < 0x80) {
        if (result > INT_MAX - 16) return false;
        *size = static_cast<size_t>(result);
        return true;
      }
    }
    return false;
  }
  bool ReadFixed32(uint32_t* v) {
    char b[4];
    if (!Copy(b, 4)) return false;
    std::memcpy(v, b, 4);
    return true;
  }
  bool Skip(size_t n) { return Take(n, nullptr); }
  // Appends the next `n` bytes (as pieces of the chunks) to `out`.
  bool Take(size_t n, FieldBytes* out) {
    if (n > remaining_) return false;
    remaining_ -= n;
    while (n > 0) {
      Normalize();
      const size_t k = std::min<size_t>(n, end_ - p_);
      if (out != nullptr) out->Append(absl::string_view(p_, k));
      p_ += k;
      n -= k;
    }
    return true;
  }

 private:
  bool Copy(char* dst, size_t n) {
    if (n > remaining_) return false;
    remaining_ -= n;
    while (n > 0) {
      Normalize();
      const size_t k = std::min<size_t>(n, end_ - p_);
      std::memcpy(dst, p_, k);
      p_ += k;
      dst += k;
      n -= k;
    }
    return true;
  }
  // Moves to the next chunk when this one is used up (callers ensure bytes remain).
  void Normalize() {
    while (p_ == end_) {
      ++chunk_;
      p_ = chunk_->data();
      end_ = p_ + chunk_->size();
    }
  }

  const absl::string_view* chunk_;
  const char* p_ = nullptr;
  const char* end_ = nullptr;
  size_t remaining_ = 0;
  size_t limit_ = 0;  // bytes this reader started with
  size_t base_ = 0;   // position of its first byte in the message
};

// Parse errors carry the message name and the byte offset.
class Errors {
 public:
  explicit Errors(absl::string_view message) : message_(message) {}
  absl::Status At(const Reader& r, absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed tessera.v1.", message_, ": ", what, " at byte ", r.position()));
  }

 private:
  absl::string_view message_;
};

// Skips one field whose tag was read; handles every wire type protobuf does, groups included.
absl::Status SkipField(Reader& r, uint32_t tag, int depth, const Errors& err) {
  if (tag >> 3 == 0) return err.At(r, "field number 0");
  switch (tag & 7) {
    case kVarint: {
      uint64_t v;
      if (!r.ReadVarint64(&v)) return err.At(r, "truncated or overlong varint");
      return absl::OkStatus();
    }
    case kFixed64:
      if (!r.Skip(8)) return err.At(r, "truncated fixed64");
      return absl::OkStatus();
    case kLen: {
      size_t n;
      if (!r.ReadSize(&n) || !r.Skip(n)) return err.At(r, "truncated length-delimited field");
      return absl::OkStatus();
    }
    case kFixed32:
      if (!r.Skip(4)) return err.At(r, "truncated fixed32");
      return absl::OkStatus();
    case kStartGroup: {
      if (depth >= kMaxDepth) return err.At(r, "groups nested too deeply");
      for (;;) {
        uint32_t inner;
        if (!r.ReadTag(&inner)) return err.At(r, "unterminated group");
        if ((inner & 7) == kEndGroup) {
          if (inner >> 3 != tag >> 3) return err.At(r, "end of group does not match its start");
          return absl::OkStatus();
        }
        if (inner == 0) return err.At(r, "tag 0");
        RETURN_IF_ERROR(SkipField(r, inner, depth + 1, err));
      }
    }
    case kEndGroup:
      return err.At(r, "end of group without a start");
    default:
      return err.At(r, absl::StrCat("invalid wire type ", tag & 7));
  }
}

// Well-formed UTF-8 (Unicode table 3-7): what protobuf requires of proto3 `string` fields.
bool ValidUtf8(absl::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int n;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
    } else {
      return false;
    }
    if (end - p <= n) return false;
    if (p[1] < lo || p[1] > hi) return false;
    for (int i = 2; i <= n; ++i) {
      if (p[i] < 0x80 || p[i] > 0xbf) return false;
    }
    p += n + 1;
  }
  return true;
}

// Raw fields of a PullRequest or PushRequest: pieces of the received slices, not yet contiguous.
struct RawRequest {
  FieldBytes table;
  FieldBytes keys;
  FieldBytes gradients;
  uint64_t offset = 0, length = 0, worker_id = 0, sequence = 0, shard_map_version = 0;
  uint32_t learning_rate_bits = 0;
  bool averaged = false;
};

absl::Status ReadTable(Reader& r, const Errors& err, FieldBytes* table) {
  size_t n;
  table->Clear();
  if (!r.ReadSize(&n) || !r.Take(n, table)) return err.At(r, "truncated table");
  bool valid;
  if (table->pieces().size() <= 1) {
    valid = table->empty() || ValidUtf8(table->pieces()[0]);
  } else {
    std::string joined(table->size(), '\0');
    table->CopyTo(joined.data());
    valid = ValidUtf8(joined);
  }
  if (!valid) return err.At(r, "table name is not valid UTF-8");
  return absl::OkStatus();
}

// Parses the fields of a PullRequest (is_push false) or a PushRequest (true) into `out`; fields
// seen again replace (scalars, bytes) or extend (keys) what was there, as in protobuf's merge.
absl::Status ParseRequest(Reader& r, bool is_push, int depth, const Errors& err, RawRequest* out) {
  while (!r.done()) {
    uint32_t tag;
    if (!r.ReadTag(&tag)) return err.At(r, "truncated tag");
    switch (tag) {
      case Tag(1, kLen):
        RETURN_IF_ERROR(ReadTable(r, err, &out->table));
        continue;
      case Tag(2, kLen): {
        size_t n;
        if (!r.ReadSize(&n)) return err.At(r, "truncated keys");
        if (n % 8 != 0) return err.At(r, absl::StrCat("packed keys of ", n, " bytes are not whole fixed64 values"));
        if (!r.Take(n, &out->keys)) return err.At(r, "truncated keys");
        continue;
      }
      case Tag(2, kFixed64):
        if (!r.Take(8, &out->keys)) return err.At(r, "truncated key");
        continue;
      case Tag(3, kVarint):
        if (!r.ReadVarint64(&out->offset)) return err.At(r, "truncated or overlong offset");
        continue;
      default:
        break;
    }
    bool known = true;
    if (!is_push) {
      switch (tag) {
        case Tag(4, kVarint):
          if (!r.ReadVarint64(&out->length)) return err.At(r, "truncated or overlong length");
          break;
        case Tag(5, kVarint):
          if (!r.ReadVarint64(&out->shard_map_version)) return err.At(r, "truncated or overlong shard_map_version");
          break;
        case Tag(6, kVarint): {
          uint64_t v;
          if (!r.ReadVarint64(&v)) return err.At(r, "truncated or overlong averaged");
          out->averaged = v != 0;
          break;
        }
        default:
          known = false;
      }
    } else {
      switch (tag) {
        case Tag(4, kLen): {
          size_t n;
          out->gradients.Clear();
          if (!r.ReadSize(&n) || !r.Take(n, &out->gradients)) return err.At(r, "truncated gradients");
          break;
        }
        case Tag(5, kVarint):
          if (!r.ReadVarint64(&out->worker_id)) return err.At(r, "truncated or overlong worker_id");
          break;
        case Tag(6, kVarint):
          if (!r.ReadVarint64(&out->sequence)) return err.At(r, "truncated or overlong sequence");
          break;
        case Tag(7, kVarint):
          if (!r.ReadVarint64(&out->shard_map_version)) return err.At(r, "truncated or overlong shard_map_version");
          break;
        case Tag(8, kFixed32):
          if (!r.ReadFixed32(&out->learning_rate_bits)) return err.At(r, "truncated learning_rate_scale");
          break;
        default:
          known = false;
      }
    }
    if (!known) {
      if (tag == 0) return err.At(r, "tag 0");
      RETURN_IF_ERROR(SkipField(r, tag, depth, err));
    }
  }
  return absl::OkStatus();
}

void ToPullFields(const RawRequest& raw, RequestDecoder::Storage* storage, PullFields* out) {
  out->table = storage->Contiguous(raw.table, 1);
  const absl::string_view keys = storage->Contiguous(raw.keys, 8);
  out->keys = absl::MakeConstSpan(reinterpret_cast<const uint64_t*>(keys.data()), keys.size() / 8);
  out->offset = raw.offset;
  out->length = raw.length;
  out->shard_map_version = raw.shard_map_version;
  out->averaged = raw.averaged;
}

void ToPushFields(const RawRequest& raw, RequestDecoder::Storage* storage, PushFields* out) {
  out->table = storage->Contiguous(raw.table, 1);
  const absl::string_view keys = storage->Contiguous(raw.keys, 8);
  out->keys = absl::MakeConstSpan(reinterpret_cast<const uint64_t*>(keys.data()), keys.size() / 8);
  out->offset = raw.offset;
  out->gradients = storage->Contiguous(raw.gradients, 4);
  out->worker_id = raw.worker_id;
  out->sequence = raw.sequence;
  out->shard_map_version = raw.shard_map_version;
  std::memcpy(&out->learning_rate_scale, &raw.learning_rate_bits, sizeof(float));
}

// Parses a PullResponse (field 1: values), PushResponse (field 1: duplicate) or PushPullResponse
// (field 1: duplicate, field 2: values).
absl::Status ParseResponse(Reader& r, uint32_t duplicate_field, uint32_t values_field, const Errors& err,
                           ResponseFields* out) {
  while (!r.done()) {
    uint32_t tag;
    if (!r.ReadTag(&tag)) return err.At(r, "truncated tag");
    if (duplicate_field != 0 && tag == Tag(duplicate_field, kVarint)) {
      uint64_t v;
      if (!r.ReadVarint64(&v)) return err.At(r, "truncated or overlong duplicate");
      out->duplicate = v != 0;
    } else if (values_field != 0 && tag == Tag(values_field, kLen)) {
      size_t n;
      out->values.Clear();
      if (!r.ReadSize(&n) || !r.Take(n, &out->values)) return err.At(r, "truncated values");
    } else {
      if (tag == 0) return err.At(r, "tag 0");
      RETURN_IF_ERROR(SkipField(r, tag, 0, err));
    }
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Slices and payloads

grpc::Slice PinnedSlice(const void* data, size_t size, std::shared_ptr<const void> pin) {
  // gRPC never writes to a slice it sends; the cast below only satisfies the C API.
  if (pin == nullptr) return grpc::Slice(data, size, grpc::Slice::STATIC_SLICE);
  return grpc::Slice(const_cast<void*>(data), size, DeletePin, new std::shared_ptr<const void>(std::move(pin)));
}

grpc::Slice AllocatedSlice(size_t size, char** data) {
  grpc_slice s = grpc_slice_malloc_large(size);  // always reference-counted, never inlined
  auto* p = reinterpret_cast<char*>(s.data.refcounted.bytes);
  if (reinterpret_cast<uintptr_t>(p) % 8 == 0) {
    *data = p;
    return grpc::Slice(s, grpc::Slice::STEAL_REF);
  }
  grpc_slice_unref(s);
  auto* words = new uint64_t[(size + 7) / 8];
  *data = reinterpret_cast<char*>(words);
  return grpc::Slice(words, size, DeleteWords, words);
}

Payload SmallOrPinned(absl::string_view bytes, const std::shared_ptr<const void>& pin) {
  if (bytes.size() < kMinSliceBytes) return Payload::Copy(bytes);
  return Payload::Reference(PinnedSlice(bytes.data(), bytes.size(), pin));
}

// ---------------------------------------------------------------------------------------------
// Requests

grpc::ByteBuffer EncodePullRequest(const PullHeader& h, Payload keys) {
  Builder b;
  b.BytesField(1, Payload::Copy(h.table));
  b.BytesField(2, std::move(keys));
  b.VarintField(3, h.offset);
  b.VarintField(4, h.length);
  b.VarintField(5, h.shard_map_version);
  b.VarintField(6, h.averaged ? 1 : 0);
  return b.Finish();
}

grpc::ByteBuffer EncodePushRequest(const PushHeader& h, Payload keys, Payload gradients) {
  return PushBuilder(h, std::move(keys), std::move(gradients)).Finish();
}

grpc::ByteBuffer EncodePushPullRequest(const PushHeader& h, Payload keys, Payload gradients) {
  Builder b;
  b.MessageField(1, PushBuilder(h, std::move(keys), std::move(gradients)));
  return b.Finish();
}

// ---------------------------------------------------------------------------------------------
// Responses

grpc::ByteBuffer EncodePushResponse(bool duplicate) {
  Builder b;
  b.VarintField(1, duplicate ? 1 : 0);
  return b.Finish();
}

float* ValuesResponseWriter::Allocate(size_t n) {
  allocated_ = true;
  n_ = n;
  if (n <= kSmallFloats) return small_;
  // [duplicate][tag, length][values]: one allocation, the values 64-byte aligned for the store's
  // vectorized copies.
  char header[16];
  size_t h = 0;
  if (push_pull_ && duplicate_) {
    header[h++] = static_cast<char>(Tag(1, kVarint));
    header[h++] = 1;
  }
  header[h++] = static_cast<char>(Tag(push_pull_ ? 2 : 1, kLen));
  for (uint64_t v = n * sizeof(float);; v >>= 7) {
    if (v < 0x80) {
      header[h++] = static_cast<char>(v);
      break;
    }
    header[h++] = static_cast<char>(v | 0x80);
  }
  const size_t bytes = n * sizeof(float);
  grpc_slice s = grpc_slice_malloc_large(h + bytes + 64);  // always reference-counted, never inlined
  uint8_t* base = s.data.refcounted.bytes;
  const size_t pad = (64 - (reinterpret_cast<uintptr_t>(base + h) % 64)) % 64;
  std::memcpy(base + pad, header, h);
  large_ = grpc::Slice(grpc_slice_sub_no_ref(s, pad, pad + h + bytes), grpc::Slice::STEAL_REF);
  return reinterpret_cast<float*>(base + pad + h);
}

grpc::ByteBuffer ValuesResponseWriter::Finish() {
  if (allocated_ && n_ > kSmallFloats) return grpc::ByteBuffer(&large_, 1);
  Builder b;
  if (push_pull_) b.VarintField(1, duplicate_ ? 1 : 0);
  if (allocated_) {
    b.BytesField(push_pull_ ? 2 : 1,
                 Payload::Copy(absl::string_view(reinterpret_cast<const char*>(small_), n_ * sizeof(float))));
  }
  return b.Finish();
}

// ---------------------------------------------------------------------------------------------
// Decoding

void FieldBytes::CopyTo(char* dst) const {
  for (absl::string_view p : pieces_) {
    std::memcpy(dst, p.data(), p.size());
    dst += p.size();
  }
}

void FieldBytes::Cursor::Read(char* dst, size_t n) {
  while (n > 0) {
    absl::string_view p = f_->pieces_[piece_];
    const size_t k = std::min(n, p.size() - offset_);
    std::memcpy(dst, p.data() + offset_, k);
    dst += k;
    n -= k;
    offset_ += k;
    if (offset_ == p.size()) {
      ++piece_;
      offset_ = 0;
    }
  }
}

absl::Status RequestDecoder::Storage::Take(const grpc::ByteBuffer& buffer) {
  slices.clear();
  chunks.clear();
  if (!buffer.Valid()) return absl::OkStatus();  // no bytes: every field at its default
  grpc::Status s = buffer.Dump(&slices);
  if (!s.ok()) return absl::InternalError(absl::StrCat("reading a received message: ", s.error_message()));
  chunks.reserve(slices.size());
  for (const grpc::Slice& slice : slices) {
    if (slice.size() != 0) chunks.emplace_back(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return absl::OkStatus();
}

absl::string_view RequestDecoder::Storage::Contiguous(const FieldBytes& bytes, size_t align) {
  if (bytes.empty()) return absl::string_view();
  if (bytes.pieces().size() == 1 && reinterpret_cast<uintptr_t>(bytes.pieces()[0].data()) % align == 0) {
    return bytes.pieces()[0];
  }
  owned.emplace_back(new uint64_t[(bytes.size() + 7) / 8]);
  char* dst = reinterpret_cast<char*>(owned.back().get());
  bytes.CopyTo(dst);
  return absl::string_view(dst, bytes.size());
}

absl::Status RequestDecoder::DecodePull(const grpc::ByteBuffer& buffer, PullFields* out) {
  RETURN_IF_ERROR(storage_.Take(buffer));
  Reader r(storage_.chunks.data(), storage_.chunks.size());
  RawRequest raw;
  RETURN_IF_ERROR(ParseRequest(r, /*is_push=*/false, 0, Errors("PullRequest"), &raw));
  *out = PullFields();
  ToPullFields(raw, &storage_, out);
  return absl::OkStatus();
}

absl::Status RequestDecoder::DecodePush(const grpc::ByteBuffer& buffer, PushFields* out) {
  RETURN_IF_ERROR(storage_.Take(buffer));
  Reader r(storage_.chunks.data(), storage_.chunks.size());
  RawRequest raw;
  RETURN_IF_ERROR(ParseRequest(r, /*is_push=*/true, 0, Errors("PushRequest"), &raw));
  *out = PushFields();
  ToPushFields(raw, &storage_, out);
  return absl::OkStatus();
}

absl::Status RequestDecoder::DecodePushPull(const grpc::ByteBuffer& buffer, PushFields* push, PullFields* pull,
                                            bool* has_pull) {
  RETURN_IF_ERROR(storage_.Take(buffer));
  Reader r(storage_.chunks.data(), storage_.chunks.size());
  const Errors err("PushPullRequest");
  RawRequest raw_push, raw_pull;
  *has_pull = false;
  while (!r.done()) {
    uint32_t tag;
    if (!r.ReadTag(&tag)) return err.At(r, "truncated tag");
    if (tag == Tag(1, kLen) || tag == Tag(2, kLen)) {
      // Sub-messages seen twice merge, which is what parsing the second into the first does.
      size_t n;
      if (!r.ReadSize(&n) || n > r.remaining()) return err.At(r, "truncated sub-message");
      Reader sub = r.Sub(n);
      const bool is_push = tag == Tag(1, kLen);
      RETURN_IF_ERROR(ParseRequest(sub, is_push, 1, Errors(is_push ? "PushPullRequest.push" : "PushPullRequest.pull"),
                                   is_push ? &raw_push : &raw_pull));
      r.Skip(n);
      if (!is_push) *has_pull = true;
    } else {
      if (tag == 0) return err.At(r, "tag 0");
      RETURN_IF_ERROR(SkipField(r, tag, 0, err));
    }
  }
  *push = PushFields();
  ToPushFields(raw_push, &storage_, push);
  if (*has_pull) {
    *pull = PullFields();
    ToPullFields(raw_pull, &storage_, pull);
  }
  return absl::OkStatus();
}

absl::Status ResponseDecoder::DecodePull(const grpc::ByteBuffer& buffer, ResponseFields* out) {
  RETURN_IF_ERROR(storage_.Take(buffer));
  Reader r(storage_.chunks.data(), storage_.chunks.size());
  out->duplicate = false;
  out->values.Clear();
  return ParseResponse(r, 0, 1, Errors("PullResponse"), out);
}

absl::Status ResponseDecoder::DecodePush(const grpc::ByteBuffer& buffer, ResponseFields* out) {
  RETURN_IF_ERROR(storage_.Take(buffer));
  Reader r(storage_.chunks.data(), storage_.chunks.size());
  out->duplicate = false;
  out->values.Clear();
  return ParseResponse(r, 1, 0, Errors("PushResponse"), out);
}

absl::Status ResponseDecoder::DecodePushPull(const grpc::ByteBuffer& buffer, ResponseFields* out) {
  RETURN_IF_ERROR(storage_.Take(buffer));
  Reader r(storage_.chunks.data(), storage_.chunks.size());
  out->duplicate = false;
  out->values.Clear();
  return ParseResponse(r, 1, 2, Errors("PushPullResponse"), out);
}

// ---------------------------------------------------------------------------------------------
// Test helpers

grpc::ByteBuffer ToByteBuffer(absl::string_view bytes, absl::Span<const size_t> cuts) {
  std::vector<grpc::Slice> slices;
  size_t prev = 0;
  for (size_t cut : cuts) {
    slices.emplace_back(bytes.data() + prev, cut - prev);
    prev = cut;
  }
  slices.emplace_back(bytes.data() + prev, bytes.size() - prev);
  return grpc::ByteBuffer(slices.data(), slices.size());
}

std::string ToString(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Valid() || !buffer.Dump(&slices).ok()) return out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

}  // namespace tessera::wire

#include "common/wire.h"

#include <google/protobuf/stubs/logging.h>

#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tessera/v1/parameter.pb.h"

namespace tessera::wire {
namespace {

using tessera::v1::PullRequest;
using tessera::v1::PullResponse;
using tessera::v1::PushPullRequest;
using tessera::v1::PushPullResponse;
using tessera::v1::PushRequest;
using tessera::v1::PushResponse;
using ::testing::HasSubstr;

absl::string_view Bytes(const void* p, size_t n) { return absl::string_view(static_cast<const char*>(p), n); }

std::string FloatBytes(const std::vector<float>& v) { return std::string(Bytes(v.data(), v.size() * 4)); }

std::vector<uint64_t> ToVector(absl::Span<const uint64_t> keys) { return {keys.begin(), keys.end()}; }
std::vector<uint64_t> ToVector(const google::protobuf::RepeatedField<uint64_t>& keys) {
  return {keys.begin(), keys.end()};
}

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// The three ways a payload reaches the encoder.
enum class Mode { kCopy, kPinned, kAllocated };

Payload MakePayload(absl::string_view bytes, Mode mode, const std::shared_ptr<const void>& pin) {
  if (bytes.empty() || mode == Mode::kCopy) return Payload::Copy(bytes);
  if (mode == Mode::kPinned) return Payload::Reference(PinnedSlice(bytes.data(), bytes.size(), pin));
  char* dst;
  grpc::Slice s = AllocatedSlice(bytes.size(), &dst);
  std::memcpy(dst, bytes.data(), bytes.size());
  return Payload::Reference(std::move(s));
}

// Field-by-field comparisons between the codec's views and protobuf's classes.
void ExpectSame(const PullFields& got, const PullRequest& want) {
  EXPECT_EQ(got.table, want.table());
  EXPECT_EQ(ToVector(got.keys), ToVector(want.keys()));
  EXPECT_EQ(got.offset, want.offset());
  EXPECT_EQ(got.length, want.length());
  EXPECT_EQ(got.shard_map_version, want.shard_map_version());
  EXPECT_EQ(got.averaged, want.averaged());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(got.keys.data()) % 8, 0u);
}

void ExpectSame(const PushFields& got, const PushRequest& want) {
  EXPECT_EQ(got.table, want.table());
  EXPECT_EQ(ToVector(got.keys), ToVector(want.keys()));
  EXPECT_EQ(got.offset, want.offset());
  EXPECT_EQ(got.gradients, want.gradients());
  EXPECT_EQ(got.worker_id, want.worker_id());
  EXPECT_EQ(got.sequence, want.sequence());
  EXPECT_EQ(got.shard_map_version, want.shard_map_version());
  EXPECT_EQ(Bits(got.learning_rate_scale), Bits(want.learning_rate_scale()));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(got.keys.data()) % 8, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(got.gradients.data()) % 4, 0u);
}

std::string Collect(const FieldBytes& f) {
  std::string s(f.size(), '\0');
  f.CopyTo(s.data());
  return s;
}

PushRequest SamplePush(size_t keys, size_t dim) {
  PushRequest p;
  p.set_table("emb/ü");
  for (size_t i = 0; i < keys; ++i) p.add_keys(i * 7919 + (uint64_t{1} << 40));
  std::vector<float> g(keys * dim);
  for (size_t i = 0; i < g.size(); ++i) g[i] = 0.5f * static_cast<float>(i) - 3.0f;
  p.set_gradients(FloatBytes(g));
  p.set_worker_id(0xfedcba9876543210ull);
  p.set_sequence(300);
  p.set_shard_map_version(7);
  p.set_learning_rate_scale(0.25f);
  return p;
}

PullRequest SamplePull(size_t keys) {
  PullRequest p;
  p.set_table("emb");
  for (size_t i = 0; i < keys; ++i) p.add_keys(i * 31 + 5);
  p.set_shard_map_version(1ull << 35);
  return p;
}

// Every way of cutting `bytes` into two slices, then into one-byte slices.
std::vector<grpc::ByteBuffer> Splits(const std::string& bytes) {
  std::vector<grpc::ByteBuffer> out;
  for (size_t i = 0; i <= bytes.size(); ++i) {
    const size_t cut[] = {i};
    out.push_back(ToByteBuffer(bytes, cut));
  }
  std::vector<size_t> all;
  for (size_t i = 1; i < bytes.size(); ++i) all.push_back(i);
  out.push_back(ToByteBuffer(bytes, all));
  const size_t empties[] = {0, 0, 3, 3};  // empty slices in between
  if (bytes.size() >= 3) out.push_back(ToByteBuffer(bytes, empties));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Encoding: what the codec writes is what protobuf writes, byte for byte, and parses back.

TEST(WireEncode, PullRequestMatchesProtobuf) {
  for (size_t keys : {0, 1, 3, 1000}) {
    for (Mode mode : {Mode::kCopy, Mode::kPinned, Mode::kAllocated}) {
      PullRequest want = SamplePull(keys);
      if (keys == 0) {
        want.set_offset(1234567);
        want.set_length(300);
      }
      want.set_averaged(keys == 1 || keys == 0);
      PullHeader h{want.table(), want.offset(), want.length(), want.shard_map_version(), want.averaged()};
      auto pin = std::make_shared<int>(0);
      grpc::ByteBuffer bb =
          EncodePullRequest(h, MakePayload(Bytes(want.keys().data(), want.keys_size() * 8), mode, pin));
      const std::string bytes = ToString(bb);
      EXPECT_EQ(bytes, want.SerializeAsString()) << keys;
      PullRequest got;
      ASSERT_TRUE(got.ParseFromString(bytes));
      EXPECT_EQ(got.DebugString(), want.DebugString());
    }
  }
}

TEST(WireEncode, PushAndPushPullRequestsMatchProtobuf) {
  for (size_t keys : {0, 1, 2000}) {
    for (Mode mode : {Mode::kCopy, Mode::kPinned, Mode::kAllocated}) {
      PushRequest want = SamplePush(keys, 4);
      if (keys == 0) {
        want.set_offset(99);
        want.set_gradients(FloatBytes({1, 2, 3}));
        want.set_learning_rate_scale(-0.0f);  // protobuf writes -0.0 (only +0.0 is the default)
      }
      PushHeader h{want.table(),
                   want.offset(),
                   want.worker_id(),
                   want.sequence(),
                   want.shard_map_version(),
                   want.learning_rate_scale()};
      auto pin = std::make_shared<int>(0);
      auto keys_payload = [&] { return MakePayload(Bytes(want.keys().data(), want.keys_size() * 8), mode, pin); };
      auto grads_payload = [&] { return MakePayload(want.gradients(), mode, pin); };

      const std::string push = ToString(EncodePushRequest(h, keys_payload(), grads_payload()));
      EXPECT_EQ(push, want.SerializeAsString());
      PushRequest got;
      ASSERT_TRUE(got.ParseFromString(push));
      EXPECT_EQ(got.DebugString(), want.DebugString());

      PushPullRequest want_pp;
      *want_pp.mutable_push() = want;
      const std::string pp = ToString(EncodePushPullRequest(h, keys_payload(), grads_payload()));
      EXPECT_EQ(pp, want_pp.SerializeAsString());
      PushPullRequest got_pp;
      ASSERT_TRUE(got_pp.ParseFromString(pp));
      EXPECT_TRUE(got_pp.has_push());
      EXPECT_FALSE(got_pp.has_pull());
      EXPECT_EQ(got_pp.DebugString(), want_pp.DebugString());
    }
  }
  // Defaults are omitted, as protobuf does: an empty push is an empty message.
  EXPECT_EQ(ToString(EncodePushRequest(PushHeader(), Payload::Copy(""), Payload::Copy(""))), "");
}

TEST(WireEncode, LargePayloadsAreReferencedNotCopied) {
  std::vector<float> grads(100000, 1.5f);
  std::weak_ptr<void> watch;
  {
    auto pin = std::make_shared<int>(0);
    watch = pin;
    Payload p = SmallOrPinned(Bytes(grads.data(), grads.size() * 4), pin);
    ASSERT_EQ(p.slice.size(), grads.size() * 4);
    EXPECT_EQ(static_cast<const void*>(p.slice.begin()), static_cast<const void*>(grads.data()));
    grpc::ByteBuffer bb = EncodePushRequest(PushHeader{"t"}, Payload::Copy(""), std::move(p));
    pin.reset();
    EXPECT_FALSE(watch.expired()) << "the encoded buffer must hold the pin";
    std::vector<grpc::Slice> slices;
    ASSERT_TRUE(bb.Dump(&slices).ok());
    bool found = false;
    for (const auto& s : slices) found |= static_cast<const void*>(s.begin()) == grads.data();
    EXPECT_TRUE(found) << "the gradients were copied";
  }
  EXPECT_TRUE(watch.expired()) << "releasing the buffer must release the pin";
  // Small payloads are copied into the header instead.
  Payload small = SmallOrPinned(Bytes(grads.data(), 64), nullptr);
  EXPECT_EQ(small.slice.size(), 0u);
  EXPECT_EQ(small.bytes.size(), 64u);
}

TEST(WireEncode, ValuesResponsesMatchProtobuf) {
  for (size_t n : {0, 1, 4, 64, 65, 1000, 300000}) {
    std::vector<float> values(n);
    for (size_t i = 0; i < n; ++i) values[i] = static_cast<float>(i) * 0.125f;
    {
      ValuesResponseWriter w;
      float* dst = w.Allocate(n);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(dst) % (n > 64 ? 64 : 4), 0u);
      std::copy(values.begin(), values.end(), dst);
      PullResponse want;
      want.set_values(FloatBytes(values));
      EXPECT_EQ(ToString(w.Finish()), want.SerializeAsString()) << n;
    }
    for (bool dup : {false, true}) {
      ValuesResponseWriter w(/*push_pull=*/true, dup);
      float* dst = w.Allocate(n);
      std::copy(values.begin(), values.end(), dst);
      PushPullResponse want;
      want.set_duplicate(dup);
      want.set_values(FloatBytes(values));
      EXPECT_EQ(ToString(w.Finish()), want.SerializeAsString()) << n << " " << dup;
    }
  }
  // Nothing allocated (the store refused the request): no values field.
  ValuesResponseWriter none(true, true);
  PushPullResponse dup_only;
  dup_only.set_duplicate(true);
  EXPECT_EQ(ToString(none.Finish()), dup_only.SerializeAsString());
  PushResponse push;
  push.set_duplicate(true);
  EXPECT_EQ(ToString(EncodePushResponse(true)), push.SerializeAsString());
  EXPECT_EQ(ToString(EncodePushResponse(false)), "");
}

// ---------------------------------------------------------------------------------------------
// Decoding: what protobuf writes, the codec reads, however the bytes are cut into slices.

TEST(WireDecode, RequestsAtEverySplit) {
  PullRequest pull = SamplePull(3);
  pull.set_offset(5);
  pull.set_length(6);
  pull.set_averaged(true);
  for (const auto& bb : Splits(pull.SerializeAsString())) {
    RequestDecoder d;
    PullFields f;
    ASSERT_TRUE(d.DecodePull(bb, &f).ok());
    ExpectSame(f, pull);
  }
  PushRequest push = SamplePush(3, 2);
  for (const auto& bb : Splits(push.SerializeAsString())) {
    RequestDecoder d;
    PushFields f;
    ASSERT_TRUE(d.DecodePush(bb, &f).ok());
    ExpectSame(f, push);
  }
  PushPullRequest pp;
  *pp.mutable_push() = SamplePush(2, 2);
  for (bool with_pull : {false, true}) {
    if (with_pull) *pp.mutable_pull() = SamplePull(2);
    for (const auto& bb : Splits(pp.SerializeAsString())) {
      RequestDecoder d;
      PushFields f;
      PullFields g;
      bool has_pull = !with_pull;
      ASSERT_TRUE(d.DecodePushPull(bb, &f, &g, &has_pull).ok());
      ExpectSame(f, pp.push());
      EXPECT_EQ(has_pull, with_pull);
      if (with_pull) ExpectSame(g, pp.pull());
    }
  }
}

TEST(WireDecode, ResponsesAtEverySplit) {
  PullResponse pull;
  pull.set_values(FloatBytes({1, 2, 3, 4, 5}));
  for (const auto& bb : Splits(pull.SerializeAsString())) {
    ResponseDecoder d;
    ResponseFields f;
    ASSERT_TRUE(d.DecodePull(bb, &f).ok());
    EXPECT_EQ(Collect(f.values), pull.values());
  }
  PushPullResponse pp;
  pp.set_duplicate(true);
  pp.set_values(FloatBytes({7, 8}));
  for (const auto& bb : Splits(pp.SerializeAsString())) {
    ResponseDecoder d;
    ResponseFields f;
    ASSERT_TRUE(d.DecodePushPull(bb, &f).ok());
    EXPECT_TRUE(f.duplicate);
    EXPECT_EQ(Collect(f.values), pp.values());
    // A cursor reads the same bytes in runs of any length.
    std::string runs(f.values.size(), '\0');
    FieldBytes::Cursor c(f.values);
    for (size_t i = 0; i < runs.size(); i += 3) c.Read(runs.data() + i, std::min<size_t>(3, runs.size() - i));
    EXPECT_EQ(runs, pp.values());
  }
  PushResponse push;
  push.set_duplicate(true);
  for (const auto& bb : Splits(push.SerializeAsString())) {
    ResponseDecoder d;
    ResponseFields f;
    ASSERT_TRUE(d.DecodePush(bb, &f).ok());
    EXPECT_TRUE(f.duplicate);
  }
  ResponseDecoder d;
  ResponseFields f;
  ASSERT_TRUE(d.DecodePull(grpc::ByteBuffer(), &f).ok()) << "no bytes is a message of defaults";
  EXPECT_TRUE(f.values.empty());
}

TEST(WireDecode, LargeFieldInOneSliceIsUsedInPlace) {
  PushRequest push = SamplePush(1000, 8);
  const std::string bytes = push.SerializeAsString();
  // Find where the gradients start and put the cut so they begin a (malloc-aligned) slice.
  const size_t at = bytes.find(push.gradients());
  ASSERT_NE(at, std::string::npos);
  const size_t cuts[] = {at};
  grpc::ByteBuffer bb = ToByteBuffer(bytes, cuts);
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(bb.Dump(&slices).ok());
  RequestDecoder d;
  PushFields f;
  ASSERT_TRUE(d.DecodePush(bb, &f).ok());
  ExpectSame(f, push);
  EXPECT_EQ(static_cast<const void*>(f.gradients.data()), static_cast<const void*>(slices[1].begin()));
}

TEST(WireDecode, SplitAndMisalignedFieldsAreCopiedAligned) {
  PushRequest push = SamplePush(500, 4);
  std::vector<size_t> cuts;
  for (size_t i = 1000; i < push.ByteSizeLong(); i += 1000) cuts.push_back(i + 1);  // odd cuts: misaligned too
  RequestDecoder d;
  PushFields f;
  ASSERT_TRUE(d.DecodePush(ToByteBuffer(push.SerializeAsString(), cuts), &f).ok());
  ExpectSame(f, push);  // checks the alignment of keys and gradients too
}

// Unknown fields, repeated fields, unpacked keys and merged sub-messages: read as protobuf reads them.
TEST(WireDecode, OddButValidEncodingsReadAsProtobufReadsThem) {
  std::string extra;
  extra += "\xc8\x06\x96\x01";                // field 105 varint 150
  extra += "\xd1\x06" + std::string(8, 'x');  // field 106 fixed64
  extra += "\xdd\x06" + std::string(4, 'y');  // field 107 fixed32
  extra +=
      "\xe2\x06\x03"
      "abc";                            // field 108 bytes
  extra += "\xeb\x06\x08\x01\xec\x06";  // field 109 group holding field 1 varint 1
  extra += "\x20\x01";                  // field 4 as a varint: a known field with a foreign wire type
  PullRequest a = SamplePull(2), b = SamplePull(3);
  b.set_table("second");
  b.set_offset(17);
  // Concatenation merges: keys add up, scalars and strings take the last value.
  const std::string pulls[] = {
      a.SerializeAsString() + extra + b.SerializeAsString(),
      extra + b.SerializeAsString(),
      // Keys unpacked (fixed64 one by one, field 2 wire type 1), then packed.
      std::string("\x11") + std::string("\x05\0\0\0\0\0\0\0", 8) + std::string("\x11") +
          std::string("\x09\0\0\0\0\0\0\0", 8) + a.SerializeAsString(),
  };
  for (const std::string& bytes : pulls) {
    PullRequest want;
    ASSERT_TRUE(want.ParseFromString(bytes));
    for (const auto& bb : Splits(bytes)) {
      RequestDecoder d;
      PullFields f;
      ASSERT_TRUE(d.DecodePull(bb, &f).ok());
      ExpectSame(f, want);
    }
  }
  PushPullRequest pp;
  *pp.mutable_push() = SamplePush(2, 1);
  PushPullRequest pp2;
  pp2.mutable_push()->set_sequence(9);
  pp2.mutable_push()->add_keys(1000);
  pp2.mutable_pull();  // present and empty
  const std::string bytes = pp.SerializeAsString() + extra + pp2.SerializeAsString();
  PushPullRequest want;
  ASSERT_TRUE(want.ParseFromString(bytes));
  RequestDecoder d;
  PushFields f;
  PullFields g;
  bool has_pull = false;
  ASSERT_TRUE(d.DecodePushPull(ToByteBuffer(bytes), &f, &g, &has_pull).ok());
  ExpectSame(f, want.push());
  EXPECT_TRUE(has_pull);
  ExpectSame(g, want.pull());
}

// The codec accepts exactly what protobuf accepts, and reads it the same way.
template <typename Proto>
void ExpectAgreement(const std::string& bytes) {
  Proto want;
  const bool proto_ok = want.ParseFromString(bytes);
  RequestDecoder d;
  absl::Status s;
  if constexpr (std::is_same_v<Proto, PullRequest>) {
    PullFields f;
    s = d.DecodePull(ToByteBuffer(bytes), &f);
    if (s.ok() && proto_ok) ExpectSame(f, want);
  } else if constexpr (std::is_same_v<Proto, PushRequest>) {
    PushFields f;
    s = d.DecodePush(ToByteBuffer(bytes), &f);
    if (s.ok() && proto_ok) ExpectSame(f, want);
  } else {
    PushFields f;
    PullFields g;
    bool has_pull;
    s = d.DecodePushPull(ToByteBuffer(bytes), &f, &g, &has_pull);
    if (s.ok() && proto_ok) {
      ExpectSame(f, want.push());
      EXPECT_EQ(has_pull, want.has_pull());
      if (has_pull) ExpectSame(g, want.pull());
    }
  }
  EXPECT_EQ(s.ok(), proto_ok) << "protobuf " << (proto_ok ? "accepts" : "refuses") << " what the codec says is " << s
                              << "; bytes (" << bytes.size() << "): " << absl::CHexEscape(bytes);
  if (!s.ok()) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  }
}

TEST(WireDecode, MalformedInputIsInvalidArgumentLikeProtobuf) {
  google::protobuf::LogSilencer quiet;  // protobuf logs every invalid UTF-8 string it meets
  struct Case {
    std::string bytes;
    std::string what;
  };
  const Case cases[] = {
      {"\x0f", "invalid wire type 7"},
      {"\x0e\x01", "invalid wire type 6"},
      {"\x02\x00", "field number 0"},
      {std::string("\x00", 1), "tag 0"},
      {"\x12\x05"
       "abcde",
       "not whole fixed64 values"},
      {"\x0a\x02\xc3\x28", "not valid UTF-8"},
      {"\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "overlong offset"},
      {"\x0c", "end of group without a start"},
      {"\x0b\x14", "end of group does not match"},
      {"\x0b\x08\x01", "unterminated group"},
      {"\x0a\x05"
       "ab",
       "truncated table"},
      {"\x12\x10"
       "abcdefgh",
       "truncated keys"},
      {"\x11"
       "abc",
       "truncated key"},
      {"\x18", "truncated or overlong offset"},
      {"\x80", "truncated tag"},
  };
  for (const Case& c : cases) {
    RequestDecoder d;
    PullFields f;
    absl::Status s = d.DecodePull(ToByteBuffer(c.bytes), &f);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << absl::CHexEscape(c.bytes);
    EXPECT_THAT(s.message(), HasSubstr(c.what)) << absl::CHexEscape(c.bytes);
    EXPECT_THAT(s.message(), HasSubstr("malformed tessera.v1.PullRequest"));
    ExpectAgreement<PullRequest>(c.bytes);
  }
  ExpectAgreement<PushRequest>(
      "\x22\x09"
      "12345678");                                       // truncated gradients
  ExpectAgreement<PushRequest>("\x45\x00\x00");          // truncated learning_rate_scale
  ExpectAgreement<PushPullRequest>("\x0a\x05\x08\x01");  // sub-message longer than the message
  ExpectAgreement<PushPullRequest>("\x0a\x02\x0c\x00");  // end-group inside a sub-message
  ExpectAgreement<PushPullRequest>("\x12\x02\x0a\x01");  // sub-message cut inside a field
}

TEST(WireDecode, TableNamesMustBeUtf8LikeProtobufSays) {
  google::protobuf::LogSilencer quiet;
  const std::string names[] = {
      "plain",
      "\xc3\xbc",
      "\xf0\x9f\x98\x80",
      "\xef\xbf\xbf",
      "\xf4\x8f\xbf\xbf",  // valid
      "\xc0\x80",
      "\xc1\xbf",
      "\xe0\x80\x80",
      "\xe0\x9f\xbf",  // overlong
      "\xed\xa0\x80",
      "\xed\xbf\xbf",  // surrogates
      "\xf4\x90\x80\x80",
      "\xf5\x80\x80\x80",
      "\xff",
      "\x80",
      "\xc3",
      "\xe2\x82",  // out of range, cut
  };
  for (const std::string& name : names) {
    std::string bytes = "\x0a";
    bytes += static_cast<char>(name.size());
    bytes += name;
    ExpectAgreement<PullRequest>(bytes);
    ExpectAgreement<PushRequest>(bytes);
  }
}

// Every truncation and many random corruptions of valid messages: the codec and protobuf agree.
TEST(WireDecode, TruncationsAndCorruptionsAgreeWithProtobuf) {
  google::protobuf::LogSilencer quiet;
  PushPullRequest pp;
  *pp.mutable_push() = SamplePush(3, 1);
  *pp.mutable_pull() = SamplePull(2);
  const std::string samples[] = {SamplePull(3).SerializeAsString(), SamplePush(3, 2).SerializeAsString(),
                                 pp.SerializeAsString()};
  std::mt19937 rng(20240611);
  for (int kind = 0; kind < 3; ++kind) {
    const std::string& good = samples[kind];
    auto check = [&](const std::string& bytes) {
      if (kind == 0) ExpectAgreement<PullRequest>(bytes);
      if (kind == 1) ExpectAgreement<PushRequest>(bytes);
      if (kind == 2) ExpectAgreement<PushPullRequest>(bytes);
    };
    for (size_t n = 0; n <= good.size(); ++n) check(good.substr(0, n));
    for (int i = 0; i < 3000 && !testing::Test::HasFailure(); ++i) {
      std::string bytes = good;
      const int edits = 1 + static_cast<int>(rng() % 3);
      for (int e = 0; e < edits; ++e) {
        const size_t at = rng() % bytes.size();
        switch (rng() % 4) {
          case 0:
            bytes[at] = static_cast<char>(rng());
            break;  // replace a byte
          case 1:
            bytes[at] = static_cast<char>(bytes[at] ^ (1 << (rng() % 8)));
            break;  // flip a bit
          case 2:
            bytes.erase(at, 1 + rng() % 3);
            break;  // drop bytes
          case 3:
            bytes.insert(at, 1, static_cast<char>(rng()));
            break;  // add a byte
        }
        if (bytes.empty()) break;
      }
      check(bytes);
    }
  }
}

}  // namespace
}  // namespace tessera::wire

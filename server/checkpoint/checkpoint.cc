#include "server/checkpoint/checkpoint.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/fault.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status.h"
#include "server/checkpoint/crc32c.h"
#include "server/checkpoint/file_util.h"

namespace tessera::server {

using tessera::v1::LoadCheckpointResponse;
using tessera::v1::SaveCheckpointResponse;
using tessera::v1::TableSpec;

namespace {

// ---------------------------------------------------------------------------------------------
// Format constants (docs/checkpoint-format.md).

constexpr char kTableMagic[8] = {'T', 'E', 'S', 'S', 'T', 'B', 'L', '\0'};
constexpr char kTrailerMagic[8] = {'T', 'E', 'S', 'S', 'E', 'N', 'D', '\0'};
constexpr uint32_t kFormatVersion = 1;
constexpr uint32_t kKindSparse = 1;
constexpr uint32_t kKindDense = 2;
constexpr size_t kFixedHeaderBytes = 80;
constexpr size_t kTrailerBytes = 32;
constexpr uint32_t kMaxBlockBytes = uint32_t{256} << 20;
constexpr uint32_t kMaxSpecBytes = uint32_t{1} << 20;
constexpr char kManifestName[] = "MANIFEST";
constexpr char kManifestMagic[] = "TESSERA-CHECKPOINT";
constexpr char kTableSuffix[] = ".tbl";

// ---------------------------------------------------------------------------------------------
// Little-endian encoding.

void PutU32(std::string* out, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>(v >> (8 * i));
  out->append(b, 4);
}
void PutU64(std::string* out, uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(v >> (8 * i));
  out->append(b, 8);
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
// Folds one CRC into a file digest (the CRC32C of the sequence of little-endian CRCs).
uint32_t ExtendDigest(uint32_t digest, uint32_t crc) {
  std::string b;
  PutU32(&b, crc);
  return Crc32c(b.data(), 4, digest);
}

std::string Hex32(uint32_t v) { return absl::StrCat("0x", absl::Hex(v, absl::kZeroPad8)); }

// Strict decimal: digits only, no sign or spaces, no overflow.
bool ParseU64(absl::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}
// Exactly 8 lowercase hex digits (as written), so every changed character changes the value.
bool ParseHex32(absl::string_view s, uint32_t* out) {
  if (s.size() != 8) return false;
  uint32_t v = 0;
  for (char c : s) {
    uint32_t d;
    if (c >= '0' && c <= '9') {
      d = static_cast<uint32_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      d = static_cast<uint32_t>(c - 'a' + 10);
    } else {
      return false;
    }
    v = (v << 4) | d;
  }
  *out = v;
  return true;
}

absl::Status DataLoss(absl::string_view path, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(path, ": ", what));
}

std::string JoinPath(absl::string_view dir, absl::string_view name) { return absl::StrCat(dir, "/", name); }

// ---------------------------------------------------------------------------------------------
// MANIFEST: a text file, one field per line, with a CRC32C of everything before its last line.
//
//   TESSERA-CHECKPOINT 1
//   prefix <escaped prefix>
//   checkpoint_id <id>
//   tables <n>
//   table <name> <file> <file bytes> <digest, 8 hex> <sparse|dense> <rows> <applied_pushes>   (n lines)
//   crc32c <8 hex>

struct ManifestEntry {
  std::string name;
  std::string file;
  uint64_t bytes = 0;
  uint32_t digest = 0;
  bool dense = false;
  uint64_t rows = 0;
  uint64_t applied_pushes = 0;
};

struct Manifest {
  uint64_t checkpoint_id = 0;
  std::vector<ManifestEntry> tables;
};

std::string SerializeManifest(const std::string& prefix, const Manifest& m) {
  std::string body = absl::StrCat(kManifestMagic, " ", kFormatVersion, "\n", "prefix ", EscapeFileName(prefix), "\n",
                                  "checkpoint_id ", m.checkpoint_id, "\n", "tables ", m.tables.size(), "\n");
  for (const ManifestEntry& e : m.tables) {
    absl::StrAppend(&body, "table ", e.name, " ", e.file, " ", e.bytes, " ", absl::Hex(e.digest, absl::kZeroPad8), " ",
                    e.dense ? "dense" : "sparse", " ", e.rows, " ", e.applied_pushes, "\n");
  }
  const uint32_t crc = Crc32c(body.data(), body.size());
  absl::StrAppend(&body, "crc32c ", absl::Hex(crc, absl::kZeroPad8), "\n");
  return body;
}

absl::StatusOr<Manifest> ParseManifest(absl::string_view content, const std::string& path, const std::string& prefix,
                                       uint64_t checkpoint_id) {
  if (content.empty()) return DataLoss(path, "empty file");
  if (content.back() != '\n') return DataLoss(path, "truncated: the last line has no newline");
  const size_t nl = content.size() >= 2 ? content.rfind('\n', content.size() - 2) : absl::string_view::npos;
  const size_t last_start = nl == absl::string_view::npos ? 0 : nl + 1;
  const absl::string_view body = content.substr(0, last_start);
  const absl::string_view last = content.substr(last_start, content.size() - last_start - 1);
  uint32_t stored = 0;
  if (!absl::StartsWith(last, "crc32c ") || !ParseHex32(last.substr(7), &stored)) {
    return DataLoss(path, "truncated or corrupt: the last line is not 'crc32c <8 hex digits>'");
  }
  const uint32_t computed = Crc32c(body.data(), body.size());
  if (stored != computed) {
    return DataLoss(path, absl::StrCat("CRC mismatch (stored ", Hex32(stored), ", computed ", Hex32(computed), ")"));
  }

  std::vector<absl::string_view> lines = absl::StrSplit(body, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  auto field = [&](size_t i, absl::string_view key) -> absl::StatusOr<absl::string_view> {
    if (i >= lines.size()) return DataLoss(path, absl::StrCat("line ", i + 1, ": missing '", key, "'"));
    if (!absl::StartsWith(lines[i], absl::StrCat(key, " "))) {
      return DataLoss(path, absl::StrCat("line ", i + 1, ": expected '", key, " ...', found '", lines[i], "'"));
    }
    return lines[i].substr(key.size() + 1);
  };
  auto number = [&](size_t i, absl::string_view key) -> absl::StatusOr<uint64_t> {
    ASSIGN_OR_RETURN(absl::string_view v, field(i, key));
    uint64_t n;
    if (!ParseU64(v, &n)) return DataLoss(path, absl::StrCat("line ", i + 1, ": bad ", key, " '", v, "'"));
    return n;
  };

  ASSIGN_OR_RETURN(const uint64_t version, number(0, kManifestMagic));
  if (version != kFormatVersion) {
    return DataLoss(path, absl::StrCat("format version ", version, "; this server reads version ", kFormatVersion));
  }
  ASSIGN_OR_RETURN(const absl::string_view escaped_prefix, field(1, "prefix"));
  if (escaped_prefix != EscapeFileName(prefix)) {
    return DataLoss(path, absl::StrCat("belongs to prefix '", escaped_prefix, "', not '", EscapeFileName(prefix), "'"));
  }
  Manifest m;
  ASSIGN_OR_RETURN(m.checkpoint_id, number(2, "checkpoint_id"));
  if (m.checkpoint_id != checkpoint_id) {
    return DataLoss(path, absl::StrCat("belongs to checkpoint ", m.checkpoint_id, ", not ", checkpoint_id));
  }
  ASSIGN_OR_RETURN(const uint64_t n, number(3, "tables"));
  if (lines.size() != 4 + n) {
    return DataLoss(path, absl::StrCat("says ", n, " tables but has ", lines.size() - std::min<size_t>(lines.size(), 4),
                                       " table lines"));
  }
  absl::flat_hash_set<std::string> names;
  for (size_t i = 4; i < lines.size(); ++i) {
    std::vector<absl::string_view> f = absl::StrSplit(lines[i], ' ');
    ManifestEntry e;
    const bool ok = f.size() == 8 && f[0] == "table" && ParseU64(f[3], &e.bytes) && ParseHex32(f[4], &e.digest) &&
                    (f[5] == "sparse" || f[5] == "dense") && ParseU64(f[6], &e.rows) &&
                    ParseU64(f[7], &e.applied_pushes);
    if (!ok) {
      return DataLoss(path, absl::StrCat("line ", i + 1,
                                         ": expected 'table <name> <file> <bytes> <digest> <kind> <rows> "
                                         "<applied_pushes>', found '",
                                         lines[i], "'"));
    }
    e.name = std::string(f[1]);
    e.file = std::string(f[2]);
    e.dense = f[5] == "dense";
    // The file name is derived from the table name, so a manifest cannot point outside its directory.
    if (e.name.empty() || !absl::StartsWith(e.name, prefix) || e.file != EscapeFileName(e.name) + kTableSuffix ||
        !names.insert(e.name).second) {
      return DataLoss(path, absl::StrCat("line ", i + 1, ": bad or duplicate table entry '", lines[i], "'"));
    }
    m.tables.push_back(std::move(e));
  }
  return m;
}

absl::StatusOr<Manifest> ReadManifest(const std::string& dir, const std::string& prefix, uint64_t checkpoint_id) {
  const std::string path = JoinPath(dir, kManifestName);
  absl::StatusOr<std::string> content = ReadFile(path);
  if (!content.ok()) {
    if (absl::IsNotFound(content.status())) {
      ASSIGN_OR_RETURN(const bool dir_exists, PathExists(dir));
      if (!dir_exists) {
        return absl::NotFoundError(absl::StrCat("checkpoint ", checkpoint_id, " of prefix '", prefix,
                                                "' does not exist (no directory ", dir, ")"));
      }
      return absl::NotFoundError(absl::StrCat("checkpoint ", checkpoint_id, " of prefix '", prefix,
                                              "' is incomplete: ", path, " is missing (the save did not finish)"));
    }
    return content.status();
  }
  return ParseManifest(*content, path, prefix, checkpoint_id);
}

// ---------------------------------------------------------------------------------------------
// Table files.

// A table's state copied out of the store under its gate.
struct TableImage {
  TableSpec spec;
  bool dense = false;
  uint64_t record_bytes = 0;  // sparse: one row; dense: one DenseTable block with its step
  uint64_t record_count = 0;
  DenseRange range;
  uint64_t rows = 0;  // sparse rows, or dense elements
  uint64_t applied_pushes = 0;
  std::string filter;
  std::string data;
};

absl::StatusOr<TableImage> CopyTable(const Table& t, absl::Duration* gate_held) {
  TableImage img;
  img.spec = t.spec;
  img.dense = t.dense != nullptr;
  // Allocated and page-faulted before closing the gate, so the copy under it is just memcpy.
  if (img.dense) {
    const uint64_t blocks = (t.dense->range().size() + DenseTable::kBlockElements - 1) / DenseTable::kBlockElements;
    img.data.resize(t.dense->memory_bytes() + 4 * blocks);
  } else {
    img.record_bytes = t.sparse->row_bytes();
    img.data.resize((t.sparse->num_rows() + 4096) * img.record_bytes);
  }
  img.data.clear();
  const absl::Time start = absl::Now();
  {
    absl::WriterMutexLock lock(&t.gate);
    if (img.dense) {
      t.dense->CopyAll(&img.data);
    } else {
      for (int s = 0; s < SparseTable::kNumStripes; ++s) img.record_count += t.sparse->CopyStripe(s, &img.data);
    }
    img.filter = t.filter.Serialize();
    img.applied_pushes = t.applied_pushes.load();
  }
  *gate_held = absl::Now() - start;
  if (img.dense) {
    img.range = t.dense->range();
    img.rows = img.range.size();
    img.record_count = (img.range.size() + DenseTable::kBlockElements - 1) / DenseTable::kBlockElements;
    if (img.record_count > 0) img.record_bytes = img.data.size() / img.record_count;
  } else {
    img.rows = img.record_count;
  }
  if (img.record_bytes * img.record_count != img.data.size()) {
    return absl::InternalError(absl::StrCat("table '", t.spec.name(), "': copied ", img.data.size(),
                                            " bytes, not a whole number of ", img.record_count, " records"));
  }
  return img;
}

struct WrittenFile {
  uint64_t bytes = 0;
  uint32_t digest = 0;
};

uint32_t FileBlockBytes(const TableImage& img, uint32_t requested) {
  const uint64_t want = std::min<uint64_t>(std::max<uint32_t>(requested, 1), kMaxBlockBytes);
  if (img.dense || img.record_bytes == 0) return static_cast<uint32_t>(want);
  return static_cast<uint32_t>(std::max<uint64_t>(1, want / img.record_bytes) * img.record_bytes);
}

absl::StatusOr<WrittenFile> WriteTableFile(const std::string& path, const TableImage& img, uint64_t checkpoint_id,
                                           uint32_t requested_block_bytes) {
  const uint32_t block_bytes = FileBlockBytes(img, requested_block_bytes);
  const std::string spec = img.spec.SerializeAsString();
  std::string header;
  header.append(kTableMagic, 8);
  PutU32(&header, kFormatVersion);
  PutU32(&header, img.dense ? kKindDense : kKindSparse);
  PutU64(&header, checkpoint_id);
  PutU64(&header, img.record_bytes);
  PutU64(&header, img.record_count);
  PutU64(&header, img.range.begin);
  PutU64(&header, img.range.end);
  PutU64(&header, img.applied_pushes);
  PutU32(&header, block_bytes);
  PutU32(&header, static_cast<uint32_t>(spec.size()));
  PutU32(&header, static_cast<uint32_t>(img.filter.size()));
  PutU32(&header, 0);  // reserved
  header += spec;
  header += img.filter;
  const uint32_t header_crc = Crc32c(header.data(), header.size());
  PutU32(&header, header_crc);

  ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileWriter> writer, AtomicFileWriter::Create(path));
  RETURN_IF_ERROR(writer->Append(header));
  uint32_t digest = ExtendDigest(0, header_crc);
  uint64_t num_blocks = 0;
  std::string crc_bytes;
  for (size_t pos = 0; pos < img.data.size(); pos += block_bytes, ++num_blocks) {
    const absl::string_view block = absl::string_view(img.data).substr(pos, block_bytes);
    const uint32_t crc = Crc32c(block.data(), block.size());
    crc_bytes.clear();
    PutU32(&crc_bytes, crc);
    RETURN_IF_ERROR(writer->Append(block));
    RETURN_IF_ERROR(writer->Append(crc_bytes));
    digest = ExtendDigest(digest, crc);
  }
  std::string trailer(kTrailerMagic, 8);
  PutU64(&trailer, num_blocks);
  PutU64(&trailer, img.data.size());
  PutU32(&trailer, digest);
  PutU32(&trailer, Crc32c(trailer.data(), trailer.size()));
  RETURN_IF_ERROR(writer->Append(trailer));
  const uint64_t bytes = writer->size();
  RETURN_IF_ERROR(writer->Commit());
  return WrittenFile{bytes, digest};
}

// Where a file of `size` bytes ends, given the layout its header describes.
std::string DescribeTruncation(uint64_t size, uint64_t header_bytes, uint64_t data_bytes, uint64_t block_bytes,
                               uint64_t num_blocks) {
  if (size < header_bytes) return absl::StrCat("expected ", header_bytes, " bytes of header, found ", size);
  const uint64_t blocks_bytes = data_bytes + 4 * num_blocks;
  uint64_t pos = size - header_bytes;
  if (pos >= blocks_bytes) {
    return absl::StrCat("expected ", kTrailerBytes, " bytes of trailer, found ", pos - blocks_bytes);
  }
  const uint64_t block = pos / (block_bytes + 4);  // every block before the last is full
  pos -= block * (block_bytes + 4);
  const uint64_t payload = std::min(block_bytes, data_bytes - block * block_bytes);
  if (pos < payload) return absl::StrCat("expected ", payload, " bytes of block ", block, ", found ", pos);
  return absl::StrCat("expected 4 bytes of the CRC of block ", block, ", found ", pos - payload);
}

// Reads and verifies one table file against its manifest entry. With `store` set, also builds the
// table (not installed); without, returns nullptr after verifying.
absl::StatusOr<std::shared_ptr<Table>> ReadTableFile(const ShardStore* store, const std::string& path,
                                                     const ManifestEntry& entry, uint64_t checkpoint_id) {
  absl::StatusOr<std::unique_ptr<SequentialFileReader>> opened = SequentialFileReader::Open(path);
  if (!opened.ok()) {
    if (absl::IsNotFound(opened.status())) return DataLoss(path, "missing (listed in MANIFEST)");
    return opened.status();
  }
  SequentialFileReader& in = **opened;
  const uint64_t file_size = in.size();
  std::string buf;

  // Fixed header.
  RETURN_IF_ERROR(in.Read(kFixedHeaderBytes, &buf));
  if (buf.size() < 8 || std::memcmp(buf.data(), kTableMagic, 8) != 0) {
    if (buf.size() < 8)
      return DataLoss(path, absl::StrCat("truncated: expected 80 bytes of header, found ", buf.size()));
    return DataLoss(path, "not a Tessera table file (bad magic)");
  }
  if (buf.size() < kFixedHeaderBytes) {
    return DataLoss(path, absl::StrCat("truncated: expected 80 bytes of header, found ", buf.size()));
  }
  const char* h = buf.data();
  const uint32_t version = GetU32(h + 8);
  if (version != kFormatVersion) {
    return DataLoss(path, absl::StrCat("format version ", version, "; this server reads version ", kFormatVersion));
  }
  const uint32_t spec_len = GetU32(h + 68);
  const uint32_t filter_len = GetU32(h + 72);
  const uint64_t header_bytes = kFixedHeaderBytes + uint64_t{spec_len} + filter_len + 4;
  if (header_bytes > file_size) {
    return DataLoss(path, absl::StrCat("truncated or corrupt header: it needs ", header_bytes,
                                       " bytes and the file has ", file_size));
  }
  std::string header = buf;
  RETURN_IF_ERROR(in.Read(header_bytes - kFixedHeaderBytes, &buf));
  if (buf.size() != header_bytes - kFixedHeaderBytes) {
    return DataLoss(path, absl::StrCat("truncated: expected ", header_bytes, " bytes of header, found ",
                                       kFixedHeaderBytes + buf.size()));
  }
  header += buf;
  const uint32_t header_stored = GetU32(header.data() + header_bytes - 4);
  const uint32_t header_computed = Crc32c(header.data(), header_bytes - 4);
  if (header_stored != header_computed) {
    return DataLoss(path, absl::StrCat("header CRC mismatch (stored ", Hex32(header_stored), ", computed ",
                                       Hex32(header_computed), ")"));
  }
  h = header.data();
  const uint32_t kind = GetU32(h + 12);
  const uint64_t file_id = GetU64(h + 16);
  const uint64_t record_bytes = GetU64(h + 24);
  const uint64_t record_count = GetU64(h + 32);
  const DenseRange range{GetU64(h + 40), GetU64(h + 48)};
  const uint64_t applied_pushes = GetU64(h + 56);
  const uint32_t block_bytes = GetU32(h + 64);
  TableSpec spec;
  if (spec_len > kMaxSpecBytes || !spec.ParseFromArray(h + kFixedHeaderBytes, static_cast<int>(spec_len))) {
    return DataLoss(path, "header holds an unreadable table spec");
  }
  const absl::string_view filter(h + kFixedHeaderBytes + spec_len, filter_len);

  // The header passed its CRC; these checks catch files from elsewhere or from a buggy writer.
  if (kind != kKindSparse && kind != kKindDense) return DataLoss(path, absl::StrCat("unknown table kind ", kind));
  const bool dense = kind == kKindDense;
  if (spec.name() != entry.name || dense != entry.dense) {
    return DataLoss(path,
                    absl::StrCat("holds ", dense ? "dense" : "sparse", " table '", spec.name(), "' but MANIFEST lists ",
                                 entry.dense ? "dense" : "sparse", " table '", entry.name, "'"));
  }
  if (file_id != checkpoint_id) {
    return DataLoss(path, absl::StrCat("belongs to checkpoint ", file_id, ", not ", checkpoint_id));
  }
  if (block_bytes == 0 || block_bytes > kMaxBlockBytes || (record_count > 0 && record_bytes == 0) ||
      (!dense && record_bytes > 0 && block_bytes % record_bytes != 0) ||
      (dense && (range.end < range.begin ||
                 record_count != (range.size() + DenseTable::kBlockElements - 1) / DenseTable::kBlockElements))) {
    return DataLoss(path, absl::StrCat("inconsistent header (record_bytes ", record_bytes, ", records ", record_count,
                                       ", block_bytes ", block_bytes, ", range [", range.begin, ", ", range.end, "))"));
  }
  // Far above any real table, and low enough that the size arithmetic below cannot overflow.
  constexpr uint64_t kMaxDataBytes = uint64_t{1} << 56;
  if (record_bytes > 0 && record_count > kMaxDataBytes / record_bytes) {
    return DataLoss(path, absl::StrCat("implausible header: ", record_count, " records of ", record_bytes, " bytes"));
  }
  const uint64_t data_bytes = record_bytes * record_count;
  const uint64_t num_blocks = (data_bytes + block_bytes - 1) / block_bytes;
  const uint64_t expected_size = header_bytes + data_bytes + 4 * num_blocks + kTrailerBytes;
  if (file_size < expected_size) {
    return DataLoss(path, absl::StrCat("truncated: ", DescribeTruncation(file_size, header_bytes, data_bytes,
                                                                         block_bytes, num_blocks)));
  }
  if (file_size > expected_size) {
    return DataLoss(path, absl::StrCat(file_size - expected_size, " unexpected bytes after the trailer (file has ",
                                       file_size, " bytes, its header describes ", expected_size, ")"));
  }
  if (file_size != entry.bytes) {
    return DataLoss(path, absl::StrCat("has ", file_size, " bytes but MANIFEST says ", entry.bytes));
  }
  const uint64_t rows = dense ? range.size() : record_count;
  if (rows != entry.rows || applied_pushes != entry.applied_pushes) {
    return DataLoss(
        path, absl::StrCat("header (", rows, " rows, ", applied_pushes, " applied pushes) disagrees with MANIFEST (",
                           entry.rows, " rows, ", entry.applied_pushes, " applied pushes)"));
  }
  constexpr size_t kFilterRecord = 16 + ExactlyOnceFilter::kWindow / 8;
  if (filter.size() < 8 || (filter.size() - 8) % kFilterRecord != 0 ||
      GetU64(filter.data()) != (filter.size() - 8) / kFilterRecord) {
    return DataLoss(path, absl::StrCat("exactly-once state of ", filter.size(), " bytes is malformed"));
  }

  // A fresh table to fill; checked against this server before any data is read.
  std::shared_ptr<Table> table;
  std::string dense_data;
  if (store != nullptr) {
    absl::StatusOr<std::shared_ptr<Table>> fresh = store->NewTable(spec);
    if (!fresh.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": this server cannot create table '", spec.name(), "': ", fresh.status().message()));
    }
    table = *std::move(fresh);
    if (dense) {
      const DenseRange& mine = table->dense->range();
      if (!(mine == range)) {
        return absl::FailedPreconditionError(absl::StrCat(
            path, ": dense table '", spec.name(), "' was saved with range [", range.begin, ", ", range.end,
            ") but this shard now owns [", mine.begin, ", ", mine.end, "); the shard map changed since the save"));
      }
      dense_data.reserve(data_bytes);
    } else if (table->sparse->row_bytes() != record_bytes) {
      return absl::FailedPreconditionError(absl::StrCat(path, ": table '", spec.name(), "' has ", record_bytes,
                                                        "-byte rows but this server lays them out in ",
                                                        table->sparse->row_bytes(), " bytes"));
    }
    if (!table->filter.Deserialize(filter)) {
      return DataLoss(path, "exactly-once state does not parse");
    }
    table->applied_pushes.store(applied_pushes);
  }

  // Blocks.
  uint32_t digest = ExtendDigest(0, header_stored);
  for (uint64_t b = 0; b < num_blocks; ++b) {
    const uint64_t payload = std::min<uint64_t>(block_bytes, data_bytes - b * block_bytes);
    RETURN_IF_ERROR(in.Read(payload + 4, &buf));
    if (buf.size() < payload) {
      return DataLoss(path,
                      absl::StrCat("truncated: expected ", payload, " bytes of block ", b, ", found ", buf.size()));
    }
    if (buf.size() < payload + 4) {
      return DataLoss(
          path, absl::StrCat("truncated: expected 4 bytes of the CRC of block ", b, ", found ", buf.size() - payload));
    }
    const uint32_t stored = GetU32(buf.data() + payload);
    const uint32_t computed = Crc32c(buf.data(), payload);
    if (stored != computed) {
      return DataLoss(path, absl::StrCat("block ", b, " CRC mismatch (stored ", Hex32(stored), ", computed ",
                                         Hex32(computed), ")"));
    }
    digest = ExtendDigest(digest, stored);
    if (table != nullptr) {
      if (dense) {
        dense_data.append(buf.data(), payload);
      } else {
        table->sparse->LoadRows(buf.data(), payload / record_bytes);
      }
    }
  }

  // Trailer.
  RETURN_IF_ERROR(in.Read(kTrailerBytes, &buf));
  if (buf.size() < kTrailerBytes) {
    return DataLoss(path, absl::StrCat("truncated: expected 32 bytes of trailer, found ", buf.size()));
  }
  const uint32_t trailer_stored = GetU32(buf.data() + 28);
  const uint32_t trailer_computed = Crc32c(buf.data(), 28);
  if (trailer_stored != trailer_computed) {
    return DataLoss(path, absl::StrCat("trailer CRC mismatch (stored ", Hex32(trailer_stored), ", computed ",
                                       Hex32(trailer_computed), ")"));
  }
  if (std::memcmp(buf.data(), kTrailerMagic, 8) != 0 || GetU64(buf.data() + 8) != num_blocks ||
      GetU64(buf.data() + 16) != data_bytes) {
    return DataLoss(path, "trailer disagrees with the header");
  }
  const uint32_t trailer_digest = GetU32(buf.data() + 24);
  if (trailer_digest != digest) {
    return DataLoss(
        path, absl::StrCat("digest mismatch (trailer ", Hex32(trailer_digest), ", computed ", Hex32(digest), ")"));
  }
  if (digest != entry.digest) {
    return DataLoss(path, absl::StrCat("digest ", Hex32(digest), " differs from MANIFEST's ", Hex32(entry.digest),
                                       " (the file is not the one this checkpoint wrote)"));
  }
  RETURN_IF_ERROR(in.Read(1, &buf));
  if (!buf.empty()) return DataLoss(path, "grew while being read");

  if (table != nullptr) {
    if (dense) {
      if (!table->dense->LoadAll(dense_data)) {
        return absl::FailedPreconditionError(absl::StrCat(path, ": dense table '", spec.name(), "' holds ", data_bytes,
                                                          " bytes, which this server cannot load "
                                                          "(its block layout differs)"));
      }
    } else if (table->sparse->num_rows() != record_count) {
      return DataLoss(
          path, absl::StrCat("holds ", record_count, " rows but only ", table->sparse->num_rows(), " distinct keys"));
    }
  }
  return table;
}

// Reads and verifies a whole checkpoint; with `store`, also builds its tables.
absl::StatusOr<std::vector<std::shared_ptr<Table>>> ReadCheckpoint(const ShardStore* store, const std::string& root,
                                                                   const std::string& prefix, uint64_t checkpoint_id,
                                                                   Manifest* manifest) {
  const std::string dir = CheckpointDir(root, prefix, checkpoint_id);
  ASSIGN_OR_RETURN(*manifest, ReadManifest(dir, prefix, checkpoint_id));
  std::vector<std::shared_ptr<Table>> tables;
  for (const ManifestEntry& e : manifest->tables) {
    ASSIGN_OR_RETURN(std::shared_ptr<Table> t, ReadTableFile(store, JoinPath(dir, e.file), e, checkpoint_id));
    tables.push_back(std::move(t));
  }
  return tables;
}

// Removes MANIFEST first, then everything else in `dir`.
absl::Status ClearCheckpointDir(const std::string& dir) {
  absl::Status s = RemoveFile(JoinPath(dir, kManifestName));
  if (!s.ok() && !absl::IsNotFound(s)) return s;
  RETURN_IF_ERROR(SyncDirectory(dir));
  ASSIGN_OR_RETURN(std::vector<std::string> names, ListDirectory(dir));
  for (const std::string& name : names) RETURN_IF_ERROR(RemoveAll(JoinPath(dir, name)));
  return absl::OkStatus();
}

double MiBPerSecond(uint64_t bytes, absl::Duration d) {
  const double s = absl::ToDoubleSeconds(d);
  return s > 0 ? static_cast<double>(bytes) / (1 << 20) / s : 0;
}

absl::StatusOr<SaveCheckpointResponse> SaveInto(ShardStore& store, const std::string& dir, const std::string& prefix,
                                                uint64_t checkpoint_id, const CheckpointOptions& options) {
  RETURN_IF_ERROR(CreateDirectories(dir));
  RETURN_IF_ERROR(ClearCheckpointDir(dir));
  SaveCheckpointResponse resp;
  Manifest manifest;
  manifest.checkpoint_id = checkpoint_id;
  for (const std::shared_ptr<Table>& t : store.TablesWithPrefix(prefix)) {
    const absl::Time start = absl::Now();
    absl::Duration gate_held;
    ASSIGN_OR_RETURN(TableImage img, CopyTable(*t, &gate_held));
    ManifestEntry e;
    e.name = img.spec.name();
    e.file = EscapeFileName(e.name) + kTableSuffix;
    e.dense = img.dense;
    e.rows = img.rows;
    e.applied_pushes = img.applied_pushes;
    const std::string path = JoinPath(dir, e.file);
    ASSIGN_OR_RETURN(const WrittenFile written, WriteTableFile(path, img, checkpoint_id, options.block_bytes));
    e.bytes = written.bytes;
    e.digest = written.digest;
    const absl::Duration took = absl::Now() - start;
    spdlog::info(
        "checkpoint {} of prefix '{}': saved table '{}' ({} rows, {} bytes) in {:.3f} s ({:.0f} MiB/s), "
        "pushes paused {:.1f} ms",
        checkpoint_id, prefix, e.name, e.rows, e.bytes, absl::ToDoubleSeconds(took), MiBPerSecond(e.bytes, took),
        absl::ToDoubleMilliseconds(gate_held));
    resp.add_files(path);
    resp.set_rows(resp.rows() + e.rows);
    resp.set_bytes(resp.bytes() + e.bytes);
    resp.set_applied_pushes(resp.applied_pushes() + e.applied_pushes);
    manifest.tables.push_back(std::move(e));
  }
  const std::string manifest_path = JoinPath(dir, kManifestName);
  const std::string text = SerializeManifest(prefix, manifest);
  // Every table file is durable; the manifest makes the checkpoint complete.
  if (auto f = TESSERA_FAULT("checkpoint.save.before_manifest"); f.fired()) return f.status();
  RETURN_IF_ERROR(WriteFileAtomically(manifest_path, text));
  resp.add_files(manifest_path);
  resp.set_bytes(resp.bytes() + text.size());
  return resp;
}

}  // namespace

std::string EscapeFileName(absl::string_view name) {
  if (name.empty()) return "%";
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(name.size());
  for (size_t i = 0; i < name.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    const bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                      c == '-' || (c == '.' && i > 0);
    if (keep) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string CheckpointDir(const std::string& root, const std::string& prefix, uint64_t checkpoint_id) {
  return absl::StrCat(root, "/", EscapeFileName(prefix), "/ckpt-", checkpoint_id);
}

absl::StatusOr<SaveCheckpointResponse> SaveCheckpoint(ShardStore& store, const std::string& root,
                                                      const std::string& prefix, uint64_t checkpoint_id,
                                                      const CheckpointOptions& options) {
  if (root.empty()) return absl::InvalidArgumentError("checkpoint root directory is empty");
  const std::string dir = CheckpointDir(root, prefix, checkpoint_id);
  const absl::Time start = absl::Now();
  absl::StatusOr<SaveCheckpointResponse> resp = SaveInto(store, dir, prefix, checkpoint_id, options);
  if (!resp.ok()) {
    // Best effort: an unfinished checkpoint has no MANIFEST and is ignored anyway.
    RemoveAll(dir).IgnoreError();
    spdlog::error("checkpoint {} of prefix '{}': save to {} failed: {}", checkpoint_id, prefix, dir,
                  resp.status().ToString());
    return Annotate(resp.status(), absl::StrCat("saving checkpoint ", checkpoint_id, " of prefix '", prefix, "'"));
  }
  const absl::Duration took = absl::Now() - start;
  spdlog::info("checkpoint {} of prefix '{}': saved {} tables, {} rows, {} bytes to {} in {:.3f} s", checkpoint_id,
               prefix, resp->files_size() - 1, resp->rows(), resp->bytes(), dir, absl::ToDoubleSeconds(took));
  return resp;
}

absl::StatusOr<LoadCheckpointResponse> LoadCheckpoint(ShardStore& store, const std::string& root,
                                                      const std::string& prefix, uint64_t checkpoint_id) {
  const absl::Time start = absl::Now();
  Manifest manifest;
  absl::StatusOr<std::vector<std::shared_ptr<Table>>> tables =
      ReadCheckpoint(&store, root, prefix, checkpoint_id, &manifest);
  if (!tables.ok()) {
    spdlog::error("checkpoint {} of prefix '{}': load failed, tables unchanged: {}", checkpoint_id, prefix,
                  tables.status().ToString());
    return tables.status();
  }
  // Every file verified and every table built: now install. Tables under the prefix that the
  // checkpoint lacks go first (dropping by name also drops longer names, which are replaced next).
  absl::flat_hash_set<std::string> restored;
  for (const auto& t : *tables) restored.insert(t->spec.name());
  for (const auto& t : store.TablesWithPrefix(prefix)) {
    if (!restored.contains(t->spec.name())) store.DropTables(t->spec.name());
  }
  LoadCheckpointResponse resp;
  uint64_t bytes = 0;
  for (size_t i = 0; i < tables->size(); ++i) {
    resp.set_rows(resp.rows() + manifest.tables[i].rows);
    resp.set_applied_pushes(resp.applied_pushes() + manifest.tables[i].applied_pushes);
    bytes += manifest.tables[i].bytes;
    store.PutTable(std::move((*tables)[i]));
  }
  const absl::Duration took = absl::Now() - start;
  spdlog::info("checkpoint {} of prefix '{}': loaded {} tables, {} rows, {} bytes in {:.3f} s ({:.0f} MiB/s)",
               checkpoint_id, prefix, manifest.tables.size(), resp.rows(), bytes, absl::ToDoubleSeconds(took),
               MiBPerSecond(bytes, took));
  return resp;
}

absl::Status VerifyCheckpoint(const std::string& root, const std::string& prefix, uint64_t checkpoint_id) {
  Manifest manifest;
  return ReadCheckpoint(nullptr, root, prefix, checkpoint_id, &manifest).status();
}

absl::StatusOr<std::vector<uint64_t>> ListCheckpoints(const std::string& root, const std::string& prefix) {
  const std::string parent = absl::StrCat(root, "/", EscapeFileName(prefix));
  absl::StatusOr<std::vector<std::string>> names = ListDirectory(parent);
  if (!names.ok()) {
    if (absl::IsNotFound(names.status())) return std::vector<uint64_t>{};
    return names.status();
  }
  std::vector<uint64_t> ids;
  for (const std::string& name : *names) {
    uint64_t id;
    if (!absl::StartsWith(name, "ckpt-") || !ParseU64(absl::string_view(name).substr(5), &id) ||
        name != absl::StrCat("ckpt-", id)) {
      continue;
    }
    if (ReadManifest(JoinPath(parent, name), prefix, id).ok()) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

absl::StatusOr<uint64_t> LatestValidCheckpoint(const std::string& root, const std::string& prefix, uint64_t up_to_id) {
  ASSIGN_OR_RETURN(std::vector<uint64_t> ids, ListCheckpoints(root, prefix));
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
    if (*it > up_to_id) continue;
    const absl::Status s = VerifyCheckpoint(root, prefix, *it);
    if (s.ok()) return *it;
    spdlog::warn("checkpoint {} of prefix '{}' is unusable, trying an older one: {}", *it, prefix, s.ToString());
  }
  return absl::NotFoundError(
      absl::StrCat("no valid checkpoint of prefix '", prefix, "' with id <= ", up_to_id, " under ", root));
}

absl::Status DeleteCheckpoint(const std::string& root, const std::string& prefix, uint64_t checkpoint_id) {
  const std::string dir = CheckpointDir(root, prefix, checkpoint_id);
  ASSIGN_OR_RETURN(const bool exists, PathExists(dir));
  if (!exists) {
    return absl::NotFoundError(absl::StrCat("checkpoint ", checkpoint_id, " of prefix '", prefix,
                                            "' does not exist (no directory ", dir, ")"));
  }
  absl::Status s = RemoveFile(JoinPath(dir, kManifestName));
  if (!s.ok() && !absl::IsNotFound(s)) return s;
  RETURN_IF_ERROR(SyncDirectory(dir));
  RETURN_IF_ERROR(RemoveAll(dir));
  return SyncDirectory(DirName(dir));
}

std::string CheckpointRoot(const std::string& job_dir, const std::string& default_root, uint32_t shard_id) {
  // Every shard has files of the same names with different rows: a shared directory gets one
  // subdirectory per shard.
  return job_dir.empty() ? default_root : absl::StrCat(job_dir, "/shard-", shard_id);
}

CheckpointHooks MakeCheckpointHooks(ShardStore* store, std::string default_root) {
  // One checkpoint operation at a time: a save and a load of the same prefix must not interleave.
  auto mu = std::make_shared<absl::Mutex>();
  auto root_of = [store, default_root = std::move(default_root)](const std::string& dir) -> absl::StatusOr<std::string> {
    if (dir.empty() && default_root.empty()) {
      return absl::FailedPreconditionError(
          "no checkpoint directory: the request names none and the server has no data directory");
    }
    return CheckpointRoot(dir, default_root, store->shard_id());
  };
  CheckpointHooks hooks;
  hooks.save = [store, mu,
                root_of](const tessera::v1::SaveCheckpointRequest& req) -> absl::StatusOr<SaveCheckpointResponse> {
    ASSIGN_OR_RETURN(const std::string root, root_of(req.dir()));
    absl::MutexLock lock(mu.get());
    auto saved = SaveCheckpoint(*store, root, req.prefix(), req.checkpoint_id());
    if (saved.ok() && req.keep() > 0) {
      // Keep the newest `keep` checkpoints (this one included); older ones only cost disk.
      auto ids = ListCheckpoints(root, req.prefix());
      if (ids.ok() && ids->size() > req.keep()) {
        for (size_t i = 0; i + req.keep() < ids->size(); ++i) {
          if (auto d = DeleteCheckpoint(root, req.prefix(), (*ids)[i]); !d.ok()) {
            spdlog::warn("pruning checkpoint {} of {}: {}", (*ids)[i], req.prefix(), d.ToString());
          }
        }
      }
    }
    return saved;
  };
  hooks.load = [store, mu,
                root_of](const tessera::v1::LoadCheckpointRequest& req) -> absl::StatusOr<LoadCheckpointResponse> {
    ASSIGN_OR_RETURN(const std::string root, root_of(req.dir()));
    absl::MutexLock lock(mu.get());
    if (req.verify_only()) {
      RETURN_IF_ERROR(VerifyCheckpoint(root, req.prefix(), req.checkpoint_id()));
      return LoadCheckpointResponse();
    }
    return LoadCheckpoint(*store, root, req.prefix(), req.checkpoint_id());
  };
  return hooks;
}

}  // namespace tessera::server

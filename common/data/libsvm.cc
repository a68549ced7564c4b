#include "common/data/libsvm.h"

#include <locale.h>
#include <stdlib.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/data/file_source.h"

namespace tessera::data {
namespace {

using internal::Source;

constexpr size_t kBlockBytes = 1 << 20;
constexpr size_t kMaxQuotedChars = 64;

inline bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

// 'token' for error messages: escaped, and cut short if long.
std::string Quote(absl::string_view token) {
  if (token.size() <= kMaxQuotedChars) return absl::StrCat("'", absl::CHexEscape(token), "'");
  return absl::StrCat("'", absl::CHexEscape(token.substr(0, kMaxQuotedChars)), "...'");
}

// Yields the lines of a Source with their absolute byte offsets, reading in large blocks.
class LineReader {
 public:
  // `base` is the offset of the next byte `source` will produce.
  LineReader(Source* source, uint64_t base)
      : source_(source), buf_(new char[kBlockBytes]), cap_(kBlockBytes), base_(base) {}

  // Sets `line` (without its '\n') and `start`; returns false at the end of the data.
  absl::StatusOr<bool> Next(absl::string_view* line, uint64_t* start) {
    while (true) {
      if (scanned_ < len_) {
        const char* nl = static_cast<const char*>(std::memchr(buf_.get() + scanned_, '\n', len_ - scanned_));
        if (nl != nullptr) {
          size_t end = static_cast<size_t>(nl - buf_.get());
          *line = absl::string_view(buf_.get() + pos_, end - pos_);
          *start = base_ + pos_;
          pos_ = scanned_ = end + 1;
          return true;
        }
        scanned_ = len_;
      }
      if (eof_) {
        if (pos_ == len_) return false;
        *line = absl::string_view(buf_.get() + pos_, len_ - pos_);
        *start = base_ + pos_;
        pos_ = scanned_ = len_;
        return true;
      }
      if (pos_ > 0) {
        std::memmove(buf_.get(), buf_.get() + pos_, len_ - pos_);
        base_ += pos_;
        len_ -= pos_;
        scanned_ -= pos_;
        pos_ = 0;
      }
      if (len_ == cap_) {  // a line longer than the buffer
        std::unique_ptr<char[]> bigger(new char[cap_ * 2]);
        std::memcpy(bigger.get(), buf_.get(), len_);
        buf_ = std::move(bigger);
        cap_ *= 2;
      }
      absl::StatusOr<size_t> got = source_->Read(buf_.get() + len_, cap_ - len_);
      if (!got.ok()) return got.status();
      if (*got == 0) eof_ = true;
      len_ += *got;
    }
  }

 private:
  Source* source_;
  std::unique_ptr<char[]> buf_;
  size_t cap_;
  size_t pos_ = 0;      // start of the next line in buf_
  size_t scanned_ = 0;  // buf_[pos_, scanned_) holds no '\n'
  size_t len_ = 0;
  uint64_t base_;  // file offset of buf_[0]
  bool eof_ = false;
};

// Counts the '\n' bytes in the first `upto` bytes of `path` (for true line numbers in errors).
absl::StatusOr<uint64_t> CountNewlines(const std::string& path, uint64_t upto) {
  absl::StatusOr<std::unique_ptr<Source>> source = Source::Open(path);
  if (!source.ok()) return source.status();
  std::unique_ptr<char[]> buf(new char[kBlockBytes]);
  uint64_t seen = 0;
  uint64_t newlines = 0;
  while (seen < upto) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(upto - seen, kBlockBytes));
    absl::StatusOr<size_t> got = (*source)->Read(buf.get(), want);
    if (!got.ok()) return got.status();
    if (*got == 0) break;
    newlines += static_cast<uint64_t>(std::count(buf.get(), buf.get() + *got, '\n'));
    seen += *got;
  }
  return newlines;
}

enum class NumberError { kNone, kBad, kNotFinite, kOverflow };

// Parses all of [b, e) as a float; accepts a leading '+'. Values too small for a float become 0 or
// a subnormal; values too large are kOverflow.
NumberError ParseFloat(const char* b, const char* e, float* out) {
  if (b < e && *b == '+') {
    ++b;
    if (b < e && (*b == '-' || *b == '+')) return NumberError::kBad;
  }
  if (b == e) return NumberError::kBad;
  std::from_chars_result r = std::from_chars(b, e, *out);
  if (r.ptr != e) return NumberError::kBad;
  if (r.ec == std::errc()) return std::isfinite(*out) ? NumberError::kNone : NumberError::kNotFinite;
  if (r.ec != std::errc::result_out_of_range) return NumberError::kBad;
  // Rare: tell underflow (keep the tiny value) from overflow. strtod_l, unlike strtod, ignores the
  // process locale.
  static const locale_t c_locale = newlocale(LC_ALL_MASK, "C", locale_t{});
  std::string text(b, e);
  double d = strtod_l(text.c_str(), nullptr, c_locale);
  if (std::isfinite(d) && std::fabs(d) <= std::numeric_limits<float>::max()) {
    *out = static_cast<float>(d);
    return NumberError::kNone;
  }
  return NumberError::kOverflow;
}

class LineParser {
 public:
  LineParser(const LibsvmOptions& opts, Dataset* out) : opts_(opts), out_(out) {}

  uint64_t max_id() const { return max_id_; }

  // Appends the example on [p, e) (a line without its '\n'), if any. On malformed input returns
  // false and sets `error` to what was expected.
  bool Parse(const char* p, const char* e, std::string* error) {
    if (const void* hash = std::memchr(p, '#', static_cast<size_t>(e - p))) {
      e = static_cast<const char*>(hash);
    }
    while (p < e && IsSpace(*p)) ++p;
    if (p == e) return true;  // blank or comment-only

    const char* t = p;
    while (t < e && !IsSpace(*t)) ++t;
    absl::string_view label_token(p, static_cast<size_t>(t - p));
    if (label_token.find(':') != absl::string_view::npos) {
      *error = absl::StrCat("missing label: the line starts with ", Quote(label_token));
      return false;
    }
    float label = 0;
    if (!ParseLabel(label_token, &label, error)) return false;

    std::vector<uint64_t>& ids = out_->ids;
    std::vector<float>& values = out_->values;
    const size_t row_begin = ids.size();
    uint64_t prev = 0;
    bool in_order = true;
    p = t;
    while (true) {
      while (p < e && IsSpace(*p)) ++p;
      if (p == e) break;
      const char* colon = nullptr;
      t = p;
      for (; t < e && !IsSpace(*t); ++t) {
        if (*t == ':' && colon == nullptr) colon = t;
      }
      absl::string_view token(p, static_cast<size_t>(t - p));
      if (colon == nullptr) {
        *error = absl::StrCat("expected 'index:value' but found ", Quote(token));
        return false;
      }
      uint64_t id = 0;
      std::from_chars_result r = std::from_chars(p, colon, id);
      if (r.ptr != colon || p == colon || (r.ec != std::errc() && r.ec != std::errc::result_out_of_range)) {
        *error = absl::StrCat("expected 'index:value' but found ", Quote(token), " (bad feature index)");
        return false;
      }
      absl::string_view id_text(p, static_cast<size_t>(colon - p));
      if (r.ec == std::errc::result_out_of_range || (opts_.num_features != 0 && id > opts_.num_features)) {
        std::string shown = id_text.size() <= kMaxQuotedChars ? std::string(id_text) : Quote(id_text);
        std::string bound = opts_.num_features != 0 ? absl::StrCat(opts_.num_features) : std::string("unbounded");
        *error = absl::StrCat("feature index ", shown, " is out of range (num_features = ", bound, ")");
        return false;
      }
      if (id == 0) {
        *error = "feature index 0 is invalid (indices start at 1)";
        return false;
      }
      const absl::string_view value_text(colon + 1, static_cast<size_t>(t - colon - 1));
      float value = 0;
      switch (ParseFloat(colon + 1, t, &value)) {
        case NumberError::kNone:
          break;
        case NumberError::kBad:
          *error = absl::StrCat("bad number ", Quote(value_text), " for feature ", id);
          return false;
        case NumberError::kNotFinite:
          *error = absl::StrCat("value ", Quote(value_text), " is not finite (feature ", id, ")");
          return false;
        case NumberError::kOverflow:
          *error = absl::StrCat("value ", Quote(value_text), " is out of range for a float (feature ", id, ")");
          return false;
      }
      if (id <= prev) in_order = false;
      prev = id;
      if (id > max_id_) max_id_ = id;
      ids.push_back(id);
      values.push_back(value);
      p = t;
    }
    if (!in_order && !SortRow(row_begin, error)) return false;
    out_->labels.push_back(label);
    out_->offsets.push_back(ids.size());
    return true;
  }

 private:
  bool ParseLabel(absl::string_view token, float* label, std::string* error) {
    const char* b = token.data();
    const char* e = b + token.size();
    if (b < e && *b == '+') ++b;
    double d = 0;
    std::from_chars_result r = std::from_chars(b, e, d);
    if (b == e || r.ptr != e || r.ec != std::errc() || (b > token.data() && *b == '-')) {
      *error = absl::StrCat("bad number ", Quote(token), " for the label");
      return false;
    }
    if (opts_.num_classes == 2) {
      if (d == 1.0) {
        *label = 1.0f;
        return true;
      }
      if (d == 0.0 || d == -1.0) {
        *label = 0.0f;
        return true;
      }
      *error = absl::StrCat("label ", Quote(token), " is not 0/1 or -1/+1");
      return false;
    }
    if (d >= 0 && d < opts_.num_classes && d == std::floor(d)) {
      *label = static_cast<float>(d);
      return true;
    }
    *error = absl::StrCat("label ", Quote(token), " is not an integer in 0..", opts_.num_classes - 1,
                          " (num_classes = ", opts_.num_classes, ")");
    return false;
  }

  // Sorts the row that starts at ids[row_begin] by index; rejects repeated indices.
  bool SortRow(size_t row_begin, std::string* error) {
    std::vector<uint64_t>& ids = out_->ids;
    std::vector<float>& values = out_->values;
    scratch_.clear();
    for (size_t i = row_begin; i < ids.size(); ++i) scratch_.emplace_back(ids[i], values[i]);
    std::stable_sort(scratch_.begin(), scratch_.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (size_t i = 0; i < scratch_.size(); ++i) {
      if (i > 0 && scratch_[i].first == scratch_[i - 1].first) {
        *error = absl::StrCat("duplicate feature index ", scratch_[i].first);
        return false;
      }
      ids[row_begin + i] = scratch_[i].first;
      values[row_begin + i] = scratch_[i].second;
    }
    return true;
  }

  const LibsvmOptions& opts_;
  Dataset* out_;
  uint64_t max_id_ = 0;
  std::vector<std::pair<uint64_t, float>> scratch_;
};

}  // namespace

absl::StatusOr<Dataset> ReadLibsvm(const std::string& path, const LibsvmOptions& opts, uint64_t byte_begin,
                                   uint64_t byte_end) {
  if (opts.num_classes < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": num_classes must be at least 2 (got ", opts.num_classes, ")"));
  }
  if (byte_begin > byte_end) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": bad byte range [", byte_begin, ", ", byte_end, ")"));
  }
  absl::StatusOr<std::unique_ptr<Source>> source = Source::Open(path);
  if (!source.ok()) return source.status();

  Dataset data;
  data.offsets.push_back(0);
  LineParser parser(opts, &data);
  if (byte_begin < byte_end) {
    uint64_t base = 0;
    if (byte_begin > 0) {
      // Start one byte early: the text up to and including the first '\n' from there belongs to
      // the previous range (it is empty when byte_begin is already a line start).
      absl::StatusOr<uint64_t> skipped = (*source)->Skip(byte_begin - 1);
      if (!skipped.ok()) return skipped.status();
      base = *skipped;
    }
    LineReader reader(source->get(), base);
    absl::string_view line;
    uint64_t start = 0;
    bool more = true;
    if (byte_begin > 0) {
      absl::StatusOr<bool> got = reader.Next(&line, &start);
      if (!got.ok()) return got.status();
      more = *got && base == byte_begin - 1;
    }
    uint64_t first_start = 0;
    uint64_t lines = 0;
    std::string error;
    while (more) {
      absl::StatusOr<bool> got = reader.Next(&line, &start);
      if (!got.ok()) return got.status();
      if (!*got || start >= byte_end) break;
      if (lines == 0) first_start = start;
      ++lines;
      if (!parser.Parse(line.data(), line.data() + line.size(), &error)) {
        absl::StatusOr<uint64_t> before = CountNewlines(path, first_start);
        if (!before.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(path, ": line at byte offset ", start, ": ", error));
        }
        return absl::InvalidArgumentError(absl::StrCat(path, ":", *before + lines, ": ", error));
      }
    }
  }
  data.num_features = opts.num_features != 0 ? opts.num_features : parser.max_id() > 0 ? parser.max_id() + 1 : 0;
  return data;
}

}  // namespace tessera::data

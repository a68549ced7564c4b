// Checkpoints of a shard's tables: save the tables under a name prefix to disk, verify, list,
// delete, and restore them. The byte layout is documented in docs/checkpoint-format.md.
//
// Layout: <root>/<escaped prefix>/ckpt-<id>/{MANIFEST, <escaped table name>.tbl ...}. Each table
// file holds a CRC-protected header (spec, row layout, applied_pushes, exactly-once state) and the
// raw rows in CRC32C-checked blocks; the MANIFEST lists the table files with their sizes and
// digests and is written last, so a directory without a valid MANIFEST is an unfinished save.
// Every file is written atomically (temp file, fsync, rename, fsync of the directory).
//
// Consistency: for each table, SaveCheckpoint holds the table's apply gate exclusively while it
// copies the rows (a memory copy, no I/O), so the rows, the exactly-once state and applied_pushes
// describe the same set of applied pushes. Pushes to that table wait for the copy only; the disk
// writes happen afterwards, outside every lock. Different tables are copied one after another, so a
// checkpoint is consistent per table, not across tables.
//
// Restore replaces the prefix's tables exactly: tables in the checkpoint are installed (replacing
// same-named ones), tables under the prefix that the checkpoint does not have are dropped. Every
// file is read and verified, and the new tables are built, before the store is touched, so a
// failed load leaves the store serving its old tables.
//
// Thread-safety: all functions are thread-safe with respect to the store. They block on disk I/O.
// Two concurrent saves of the same (root, prefix, id) are not supported (use the hooks, which
// serialize checkpoint operations); a mixed-up result is detected by the digests on load.
#ifndef TESSERA_SERVER_CHECKPOINT_CHECKPOINT_H_
#define TESSERA_SERVER_CHECKPOINT_CHECKPOINT_H_

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/parameter_service.h"
#include "server/shard_store.h"
#include "tessera/v1/parameter.pb.h"

namespace tessera::server {

struct CheckpointOptions {
  // Payload bytes per checksummed block; sparse tables round it down to whole rows (at least one).
  // Smaller blocks localize corruption more precisely at a cost of 4 bytes each.
  uint32_t block_bytes = uint32_t{1} << 20;
};

// Saves every table whose name starts with `prefix` as checkpoint `checkpoint_id` under `root`,
// replacing a previous checkpoint with that id (its MANIFEST is removed first, so a crash midway
// leaves an incomplete checkpoint, never a mixed one). Returns the files written (full paths,
// MANIFEST last), rows (sparse rows + dense elements), bytes written and the tables' summed
// applied_pushes at the moment of their copy. Blocks pushes to a table only while copying it.
absl::StatusOr<tessera::v1::SaveCheckpointResponse> SaveCheckpoint(ShardStore& store, const std::string& root,
                                                                   const std::string& prefix, uint64_t checkpoint_id,
                                                                   const CheckpointOptions& options = {});

// Restores checkpoint `checkpoint_id` of `prefix`: the prefix's tables become exactly those of the
// checkpoint, with their rows, optimizer state, exactly-once state and applied_pushes.
// NOT_FOUND: no such checkpoint, or it has no MANIFEST (unfinished save).
// DATA_LOSS: a file is truncated, corrupt, missing or not from this checkpoint (the message names
// the file and what is wrong). FAILED_PRECONDITION: the checkpoint does not fit this server (a
// dense table's range differs from the range this shard owns now, or the row layout changed).
// On any error the store is unchanged.
absl::StatusOr<tessera::v1::LoadCheckpointResponse> LoadCheckpoint(ShardStore& store, const std::string& root,
                                                                   const std::string& prefix, uint64_t checkpoint_id);

// Reads every file of the checkpoint and checks all CRCs and digests, without building tables.
// Same error codes as LoadCheckpoint (apart from FAILED_PRECONDITION).
absl::Status VerifyCheckpoint(const std::string& root, const std::string& prefix, uint64_t checkpoint_id);

// Ids of the checkpoints of `prefix` whose MANIFEST is present and checksum-valid, ascending.
// Only the MANIFEST is read; table files are checked by VerifyCheckpoint. Empty if none.
absl::StatusOr<std::vector<uint64_t>> ListCheckpoints(const std::string& root, const std::string& prefix);

// The highest id <= up_to_id whose checkpoint passes VerifyCheckpoint, skipping (and logging)
// corrupt or unfinished ones; NOT_FOUND if there is none.
absl::StatusOr<uint64_t> LatestValidCheckpoint(const std::string& root, const std::string& prefix,
                                               uint64_t up_to_id = std::numeric_limits<uint64_t>::max());

// Removes a checkpoint directory (MANIFEST first, so a crash midway leaves it invalid, not
// half-valid). NOT_FOUND if it does not exist.
absl::Status DeleteCheckpoint(const std::string& root, const std::string& prefix, uint64_t checkpoint_id);

// <root>/<EscapeFileName(prefix)>/ckpt-<id>
std::string CheckpointDir(const std::string& root, const std::string& prefix, uint64_t checkpoint_id);

// A name as one path component: letters, digits, '_' and '-' and non-leading '.' are kept, every
// other byte becomes %XX (so "/" -> "%2F" and names cannot be "." or ".."); "" becomes "%".
std::string EscapeFileName(absl::string_view name);

// Hooks for ParameterServiceImpl. Requests with an empty `dir` use `default_root`; if that is empty
// too they fail with FAILED_PRECONDITION. The hooks run one checkpoint operation at a time and
// block the calling thread for the whole save or load. `store` must outlive the hooks.
CheckpointHooks MakeCheckpointHooks(ShardStore* store, std::string default_root);

// The directory a shard uses for a job's checkpoints: the job's checkpoint.dir (shared storage,
// possibly) gets a "shard-<id>" subdirectory per shard; without one, the server's own root.
std::string CheckpointRoot(const std::string& job_dir, const std::string& default_root, uint32_t shard_id);

}  // namespace tessera::server

#endif  // TESSERA_SERVER_CHECKPOINT_CHECKPOINT_H_

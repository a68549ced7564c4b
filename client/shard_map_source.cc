#include "client/shard_map_source.h"

namespace tessera::client {

tessera::v1::ShardMap MakeStaticShardMap(const std::vector<std::string>& addresses) {
  tessera::v1::ShardMap map;
  map.set_version(addresses.size() > 1 ? 1 : 0);
  for (size_t i = 0; i < addresses.size(); ++i) {
    auto* s = map.add_shards();
    s->set_shard_id(static_cast<uint32_t>(i));
    s->set_address(addresses[i]);
    s->set_alive(true);
  }
  return map;
}

namespace {
class StaticSource final : public ShardMapSource {
 public:
  explicit StaticSource(std::vector<std::string> addresses) : map_(MakeStaticShardMap(addresses)) {}
  absl::StatusOr<tessera::v1::ShardMap> Fetch() override { return map_; }

 private:
  const tessera::v1::ShardMap map_;
};
}  // namespace

std::unique_ptr<ShardMapSource> StaticShardMap(std::vector<std::string> addresses) {
  return std::make_unique<StaticSource>(std::move(addresses));
}

}  // namespace tessera::client

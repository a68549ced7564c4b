#!/bin/bash
# Profiles one tessera-bench figure with perf: a tessera-server and the benchmark (the client side)
# each run under `perf record`, then prints where CPU went on both sides, by cost category and by
# symbol.
#
#   tests/bench/profile.sh FIGURE [tessera-bench flags...]
#   tests/bench/profile.sh dense_push_MBps_1MiB --seconds=3
#   BUILD=build-bench KEEP=1 tests/bench/profile.sh sparse_push_keys_per_s
#
# Environment: BUILD (build directory, default <repo>/build), PERF_CG (perf call-graph option,
# default "--call-graph dwarf,16384"; empty for flat profiles, whose categories then see only the
# sampled function), KEEP=1 keeps the perf data.
# Needs `perf` (Debian package linux-perf) and perf_event_paranoid <= 2 for user-space profiles.
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '2,13p' "$0"
  exit 2
fi
FIGURE=$1
shift
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
PERF_CG=${PERF_CG---call-graph dwarf,16384}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/tessera-profile-XXXXXX")
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then kill -TERM "$SERVER_PID"; fi
  if [ "${KEEP:-0}" = 1 ]; then echo "perf data kept in $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

# shellcheck disable=SC2086
perf record -F 1999 $PERF_CG -o "$DIR/server.data" -- "$BUILD/tessera-server" --host=127.0.0.1 --port=0 \
  --port_file="$DIR/port" --data_dir="$DIR/data" --unix_socket="$DIR/sock" --log_level=warn \
  > "$DIR/server.log" 2>&1 &
PERF_PID=$!
for _ in $(seq 200); do [ -s "$DIR/port" ] && break; sleep 0.1; done
[ -s "$DIR/port" ] || { echo "tessera-server did not start; see $DIR/server.log" >&2; KEEP=1; exit 1; }
SERVER_PID=$(pgrep -P "$PERF_PID" -x tessera-server)

# shellcheck disable=SC2086
perf record -F 1999 $PERF_CG -o "$DIR/client.data" -- "$BUILD/tessera-bench" \
  --servers="127.0.0.1:$(cat "$DIR/port")" --unix_socket_path="$DIR/sock" --only="$FIGURE" --json "$@" \
  > "$DIR/bench.json" 2> "$DIR/bench.err" || { cat "$DIR/bench.err" >&2; exit 1; }
kill -TERM "$SERVER_PID"
wait "$PERF_PID" || true
SERVER_PID=

echo "== tessera-bench --only=$FIGURE $*"
cat "$DIR/bench.json"
for side in server client; do
  if [ -n "$PERF_CG" ]; then
    perf script -i "$DIR/$side.data" 2>/dev/null > "$DIR/$side.txt" || true
  else  # one line per sample: "  ip symbol (dso)", read as a one-frame stack
    perf script -F ip,sym,dso -i "$DIR/$side.data" 2>/dev/null | awk '{print "\t" $0; print ""}' > "$DIR/$side.txt" || true
  fi
  echo
  echo "== $side: CPU by cost category (share of the side's samples)"
  python3 - "$DIR/$side.txt" <<'PY'
import collections, re, sys
def has(st, pat): return any(re.search(pat, f) for f in st)
rules = [
  ("page faults (fresh memory)",         lambda st: has(st, r'exc_page_fault')),
  ("kernel socket copy",                 lambda st: re.search(r'_copy_to_iter|_copy_from_iter|copy_user|skb_copy', st[0])),
  ("protobuf parse copy (bytes field)",  lambda st: 'mem' in st[0] and has(st, r'ReadStringFallback|_InternalParse')),
  ("protobuf serialize copy",            lambda st: 'mem' in st[0] and has(st, r'_InternalSerialize|WriteRawFallback')),
  ("client: copy out of response",       lambda st: 'mem' in st[0] and has(st, r'KvClient::OnDone|OpState::Complete')),
  ("client: copy into request",          lambda st: 'mem' in st[0] and has(st, r'KvClient::Send')),
  ("client: key sort/dedup/check",       lambda st: has(st, r'KvClient::StartSparse') and not has(st, r'KvClient::Route')),
  ("server: table copy to response",     lambda st: 'mem' in st[0] and has(st, r'DenseTable::Pull|SparseTable::(ReadRow|Pull)')),
  ("server: zero-fill (string resize)",  lambda st: 'memset' in st[0]),
  ("server: optimizer apply",            lambda st: re.search(r'::Apply\b|ApplyRow', st[0])),
  ("server: NaN/Inf check",              lambda st: has(st, r'FirstNonFinite')),
  ("server: hash index probe",           lambda st: re.search(r'SparseTable::(Find|FindOrInsert|Grow)', st[0])),
  ("absl Mutex / deadlock detection",    lambda st: re.search(r'libabsl_synchronization|GraphCycles|SpinLock|absl.*Mutex', st[0])),
  ("other memcpy",                       lambda st: re.search(r'memmove|memcpy', st[0])),
  ("kernel: scheduling / wakeups",       lambda st: re.search(r'finish_task_switch|_raw_spin_unlock_irq|schedule|futex|try_to_wake', st[0])),
  ("kernel: other (TCP stack, syscalls)", lambda st: '[kernel.kallsyms]' in st[0]),
  ("gRPC core / C++",                    lambda st: re.search(r'libgrpc|libgpr|grpc', st[0])),
  ("malloc / free",                      lambda st: re.search(r'jemalloc|malloc|_int_free|\bfree\b|operator new|operator delete', st[0])),
  ("tessera code",                       lambda st: 'tessera' in st[0]),
  ("other",                              lambda st: True),
]
counts, total, stack = collections.Counter(), 0, []
def sample(st):
  global total
  total += 1
  for name, rule in rules:
    if rule(st):
      counts[name] += 1
      return
for line in open(sys.argv[1], errors='replace'):
  if not line.strip():
    if stack: sample(stack)
    stack = []
  elif line[0] in ' \t':
    parts = line.strip().split(' ', 1)
    if len(parts) == 2: stack.append(parts[1])
if stack: sample(stack)
for name, c in counts.most_common():
  print(f"  {100.0 * c / max(total, 1):5.1f}%  {name}")
print(f"  ({total} samples)")
PY
  echo "== $side: top symbols"
  perf report -i "$DIR/$side.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | sed -E 's/ +/ /g; s/ - - *$//' | cut -c1-140 | awk 'NR <= 15' || true
done

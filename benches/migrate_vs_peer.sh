#!/usr/bin/env bash
# Scripted comparison (not a test): re-encrypting N Fernet rows on PostgreSQL with
#   1. the Python peer: the Python application's migration script (psycopg2 execute_batch, one commit
#      per batch), not part of this repository; its path in $PEER (`seed ROWS`, `migrate BATCH`),
#   2. `cargo xtask migrate` (the command users run),
#   3. one server-side UPDATE touching the same rows (the floor),
# all on the same data, machine and run. Usage:
#   PEER=/path/to/migrate_peer.py bash benches/migrate_vs_peer.sh [ROWS=200000] [BATCH=1000] [VALUE_BYTES]
# VALUE_BYTES (optional): plaintext size of each seeded value, e.g. 16384. Without it the peer's own
# seed is used (~50-byte `access-sandbox-<uuid>` values); with it the same table is seeded here with
# the peer's Fernet key and random text values of that many bytes.
# Needs PostgreSQL on 127.0.0.1:5432 (database `test`) and python3 with cryptography + psycopg2
# (`pip install cryptography psycopg2-binary`).
set -euo pipefail
PEER=${PEER:-}
if [ -z "$PEER" ] || [ ! -f "$PEER" ]; then
    echo "migrate_vs_peer.sh: set PEER to the Python application's migration script" \
        "(migrate_peer.py; not part of this repository)${PEER:+: $PEER is not a file}" >&2
    exit 2
fi
PEER=$(realpath "$PEER")   # a path relative to where the script was started from
cd "$(dirname "$0")/.."
ROWS=${1:-200000}
BATCH=${2:-1000}
VALUE_BYTES=${3:-}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGDATABASE=${PGDATABASE:-test} PGUSER=${PGUSER:-postgres}
DB_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$PGDATABASE"
# The peer's fixed keys, so both tools read the same Fernet tokens.
export MANNA_ENCRYPTION_KEY="cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4="
export MANNA_ENCRYPTION_KEY_AES256="AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="   # bytes 0..32, as the peer
unset REDIS_URL

now() { date +%s.%N; }
seed_sized() {
    python3 - "$ROWS" "$VALUE_BYTES" <<'PY'
import base64, os, sys
import psycopg2, psycopg2.extras
from cryptography.fernet import Fernet
rows, size = int(sys.argv[1]), int(sys.argv[2])
f = Fernet(os.environ["MANNA_ENCRYPTION_KEY"].encode())
c = psycopg2.connect(""); cur = c.cursor()
cur.execute("DROP TABLE IF EXISTS plaid_items")
cur.execute("CREATE TABLE plaid_items (id BIGSERIAL PRIMARY KEY, access_token TEXT NOT NULL, version INT NOT NULL DEFAULT 1)")
for start in range(0, rows, 1000):
    vals = [(f.encrypt(base64.urlsafe_b64encode(os.urandom(size))[:size]).decode(),)
            for _ in range(min(1000, rows - start))]
    psycopg2.extras.execute_values(cur, "INSERT INTO plaid_items (access_token) VALUES %s", vals, page_size=1000)
c.commit()
PY
}
seed() {
    if [ -n "$VALUE_BYTES" ]; then seed_sized; else python3 "$PEER" seed "$ROWS" >/dev/null; fi
    psql -qAt -c "VACUUM ANALYZE plaid_items" >/dev/null
}

cargo build --quiet --release -p xtask
XTASK=${CARGO_TARGET_DIR:-target}/release/xtask

echo "rows=$ROWS batch=$BATCH value_bytes=${VALUE_BYTES:-peer default (~50)}"
seed
peer_out=$(python3 "$PEER" migrate "$BATCH")
echo "python peer:   $peer_out"
peer_rps=$(echo "$peer_out" | sed -E 's/.*: ([0-9]+) rows\/s/\1/')

seed
psql -qAt -c "DELETE FROM manna_migration_checkpoints" >/dev/null 2>&1 || true
t0=$(now)
"$XTASK" migrate --database-url "$DB_URL" --column plaid_items.access_token --aad row \
    --batch-size "$BATCH" --json >/tmp/manna-migrate-report.json
t1=$(now)
manna_s=$(echo "$t1 - $t0" | bc -l)
manna_rps=$(echo "$ROWS / $manna_s" | bc -l)
printf 'manna:         migrated %s rows in %.2fs: %.0f rows/s (wall clock, process start to exit)\n' "$ROWS" "$manna_s" "$manna_rps"

seed
t0=$(now)
psql -qAt -c "UPDATE plaid_items SET access_token = 'mn1:' || md5(access_token) || access_token" >/dev/null
t1=$(now)
upd_s=$(echo "$t1 - $t0" | bc -l)
printf 'one UPDATE:    %.2fs\n' "$upd_s"

printf 'ratio manna/peer rows/s: %.1fx   manna time / UPDATE time: %.2fx\n' \
    "$(echo "$manna_rps / $peer_rps" | bc -l)" "$(echo "$manna_s / $upd_s" | bc -l)"

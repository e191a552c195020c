#!/usr/bin/env bash
# Does scraping /metrics cost the broker anything under load? scripts/bench-ab.sh with one
# binary run two ways: A with `metrics_listen` set and never scraped, B the same with `curl`
# fetching /metrics every second for as long as the broker lives. Loopback only.
#
#   scripts/bench-scrape.sh BINARY ROUNDS [uringmq-load options...]
#   e.g. LOAD=target/ci/uringmq-load scripts/bench-scrape.sh target/ci/uringmq 3 \
#            -s pairs -c 16 -q 1 --max -d 6s --mqtt 3
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[[ $# -ge 2 ]] || { sed -n '2,9p' "$0"; exit 2; }
BIN=$(realpath "$1") ROUNDS=$2
shift 2
METRICS_PORT=${METRICS_PORT:-19883}
DIR=$(mktemp -d /tmp/bench-scrape.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
printf 'metrics_listen = "127.0.0.1:%s"\n' "$METRICS_PORT" >"$DIR/m.toml"
cat >"$DIR/not-scraped" <<SH
#!/usr/bin/env bash
exec "$BIN" --config "$DIR/m.toml" "\$@"
SH
# exec keeps the broker's pid, which bench-one.sh measures; the scraper stops with it.
cat >"$DIR/scraped" <<SH
#!/usr/bin/env bash
me=\$\$
( sleep 0.3; while kill -0 \$me 2>/dev/null; do
    curl -s -o /dev/null http://127.0.0.1:$METRICS_PORT/metrics; sleep 1; done ) &
exec "$BIN" --config "$DIR/m.toml" "\$@"
SH
chmod +x "$DIR/not-scraped" "$DIR/scraped"
"$ROOT/scripts/bench-ab.sh" "$DIR/not-scraped" "$DIR/scraped" "$ROUNDS" "$@"

#!/usr/bin/env bash
# Puts the install script of every previous release listed in sql/releases
# (pg_integration--VERSION.sql) into PostgreSQL's extension folder, so that
# the upgrade test can `CREATE EXTENSION pg_integration VERSION '…'` and then
# `ALTER EXTENSION … UPDATE`. Each script is generated once from its commit
# (`git archive` of it, `cargo pgrx schema` with the shared target folder) and
# cached under OUT; later runs only copy it.
#   usage: release-sql.sh OUT PG_CONFIG
set -euo pipefail
out=$1
pg_config=$2
root=$(cd "$(dirname "$0")/.." && pwd)
extdir=$("$pg_config" --sharedir)/extension
sudo=$([ "$(id -u)" = 0 ] || echo sudo)
mkdir -p "$out"
while read -r version commit; do
  [[ -z $version || $version == \#* ]] && continue
  sql=$out/pg_integration--$version.sql
  if [ ! -s "$sql" ]; then
    echo "building the install script of release $version (commit $commit)"
    src=$out/src-$version
    rm -rf "$src" && mkdir -p "$src"
    git -C "$root" archive "$commit" | tar -x -C "$src"
    (cd "$src/extension" &&
      CARGO_TARGET_DIR=$root/target/releases cargo pgrx schema pg15 \
        --pg-config "$pg_config" --out "$sql.partial" >/dev/null)
    mv "$sql.partial" "$sql"
    rm -rf "$src"
  fi
  $sudo install -m 644 "$sql" "$extdir/"
done < "$root/sql/releases"

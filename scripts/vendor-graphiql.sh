#!/usr/bin/env bash
# Refresh GraphiQL's vendored browser assets from the npm registry.
#
# The GraphiQL page must work offline and under a 'self'-only Content-Security-Policy,
# so the production UMD builds it needs are kept in the package instead of a CDN.
# Each file is checked against the sha384 that Strawberry's own GraphiQL template pins
# (strawberry/static/graphiql.html), so the set stays the one Strawberry is tested with.
# To move to new versions: change the pins and hashes below together, run this, and
# run the browser tests (tests/http/test_graphiql_browser.py).
set -euo pipefail

DEST="$(cd "$(dirname "$0")/.." && pwd)/server/http/static/graphiql/vendor"

REACT=18.2.0
GRAPHIQL=3.8.3
EXPLORER=1.0.2

# destination file | package@version | path inside the package | sha384 (base64)
FILES="
react.production.min.js|react@$REACT|umd/react.production.min.js|tMH8h3BGESGckSAVGZ82T9n90ztNXxvdwvdM6UoR56cYcf+0iGXBliJ29D+wZ/x8
react-dom.production.min.js|react-dom@$REACT|umd/react-dom.production.min.js|bm7MnzvK++ykSwVJ2tynSE5TRdN+xL418osEVF2DE/L/gfWHj91J2Sphe582B1Bh
graphiql.min.js|graphiql@$GRAPHIQL|graphiql.min.js|HbRVEFG0JGJZeAHCJ9Xm2+tpknBQ7QZmNlO/DgZtkZ0aJSypT96YYGRNod99l9Ie
graphiql.min.css|graphiql@$GRAPHIQL|graphiql.min.css|Mq3vbRBY71jfjQAt/DcjxUIYY33ksal4cgdRt9U/hNPvHBCaT2JfJ/PTRiPKf0aM
plugin-explorer.umd.js|@graphiql/plugin-explorer@$EXPLORER|dist/index.umd.js|2oonKe47vfHIZnmB6ZZ10vl7T0Y+qrHQF2cmNTaFDuPshpKqpUMGMc9jgj9MLDZ9
plugin-explorer.css|@graphiql/plugin-explorer@$EXPLORER|dist/style.css|5DFJlDPW2tSATRbM8kzoP1j194jexLswuNmClWoRr2Q0x7R68JIQzPHZ02Faktwi
"
# Licence files: the plugin's package ships none; it is MIT from the same repository
# (graphql/graphiql) as graphiql, whose LICENSE covers it.
LICENSES="
react.LICENSE|react@$REACT|LICENSE
react-dom.LICENSE|react-dom@$REACT|LICENSE
graphiql.LICENSE|graphiql@$GRAPHIQL|LICENSE
plugin-explorer.LICENSE|graphiql@$GRAPHIQL|LICENSE
"

SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT

unpack() {  # package@version -> directory holding the unpacked package
  local spec="$1" dir="$SCRATCH/$(echo "$1" | tr '/@' '__')"
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir"
    local tarball
    tarball="$(cd "$SCRATCH" && npm pack --silent "$spec")"
    tar -xzf "$SCRATCH/$tarball" -C "$dir"
  fi
  echo "$dir/package"
}

mkdir -p "$DEST"
rm -f "$DEST"/*
manifest="$DEST/VERSIONS"
echo "# Vendored by scripts/vendor-graphiql.sh; file  package@version  sha384" >"$manifest"

for line in $FILES; do
  IFS='|' read -r name spec path want <<<"$line"
  source="$(unpack "$spec")/$path"
  got="$(openssl dgst -sha384 -binary "$source" | openssl base64 -A)"
  if [ "$got" != "$want" ]; then
    echo "sha384 of $spec/$path is $got, expected $want" >&2
    exit 1
  fi
  cp "$source" "$DEST/$name"
  echo "$name  $spec  sha384-$got" >>"$manifest"
done

for line in $LICENSES; do
  IFS='|' read -r name spec path <<<"$line"
  cp "$(unpack "$spec")/$path" "$DEST/$name"
done

echo "vendored into $DEST:"
ls -l "$DEST"

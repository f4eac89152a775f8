#!/usr/bin/env bash
# Re-creates app/api/static/vendor/: the JavaScript the web page (/) and GraphiQL (/graphql)
# load, taken from their npm packages at the pinned versions below, so that no page of
# Convertd loads anything from a CDN. Needs npm. Run it after changing a pin (GraphiQL's
# pins follow Strawberry's template: see its strawberry/static/graphiql.html).
#
#   bash scripts/vendor_js.sh
#
# A folder is named PACKAGE@VERSION and holds the package's own paths, so the page refers to
# /static/vendor/PACKAGE@VERSION/PATH exactly where the template named
# https://unpkg.com/PACKAGE@VERSION/PATH (app/api/pages.py rewrites that prefix).
set -euo pipefail
cd "$(dirname "$0")/.."

# package@version  files inside the package
FILES=(
  "graphql-ws@6.4.2 umd/graphql-ws.min.js"
  "react@18.2.0 umd/react.production.min.js"
  "react-dom@18.2.0 umd/react-dom.production.min.js"
  "js-cookie@3.0.5 dist/js.cookie.min.js"
  "graphiql@3.8.3 graphiql.min.js graphiql.min.css"
  "@graphiql/plugin-explorer@1.0.2 dist/index.umd.js dist/style.css"
)

dest=app/api/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$dest"
mkdir -p "$dest"
for entry in "${FILES[@]}"; do
  read -r spec paths <<<"$entry"
  tarball=$(cd "$work" && npm pack --silent "$spec" | tail -n 1)
  unpacked="$work/${tarball%.tgz}"
  mkdir -p "$unpacked"
  tar -xzf "$work/$tarball" -C "$unpacked"
  for path in $paths; do
    mkdir -p "$(dirname "$dest/$spec/$path")"
    cp "$unpacked/package/$path" "$dest/$spec/$path"
  done
  for licence in LICENSE LICENSE.md LICENSE.txt; do
    [ -f "$unpacked/package/$licence" ] && cp "$unpacked/package/$licence" "$dest/$spec/LICENSE" && break
  done
  if [ ! -f "$dest/$spec/LICENSE" ]; then  # its package.json still names the licence
    licence=$(node -p "require('$unpacked/package/package.json').license")
    echo "$spec is published under the $licence licence (its package.json); it ships no licence file." \
      > "$dest/$spec/LICENSE"
  fi
  echo "vendored $spec: $paths"
done
# what is here and its digest, for review (the pages' integrity attributes use sha384)
(cd "$dest" && find . -type f ! -name MANIFEST | sort | while read -r f; do
  echo "$(openssl dgst -sha384 -binary "$f" | openssl base64 -A) ${f#./}"
done) > "$dest/MANIFEST"

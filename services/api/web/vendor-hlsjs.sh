#!/usr/bin/env bash
# Install hls.js from the npm registry (the version pinned in package.json and package-lock.json) and copy its
# minified build next to the api's static files, where the playback player page loads it (/playback/hls.min.js).
# hls.js is Apache-2.0; its licence goes along with it. Idempotent: does nothing when the copy is current.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="$here/../src/argus_api/static/vendor"
cd "$here"
want="$(node -p "require('./package.json').dependencies['hls.js']")"
if [[ -f "$dest/hls.min.js" && -f "$dest/hls.js.version" && "$(cat "$dest/hls.js.version")" == "$want" ]]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
mkdir -p "$dest"
cp node_modules/hls.js/dist/hls.min.js "$dest/hls.min.js"
cp node_modules/hls.js/LICENSE "$dest/hls.js.LICENSE"
echo "$want" > "$dest/hls.js.version"
echo "vendored hls.js $want into ${dest#"$here/../"}" >&2

#!/usr/bin/env bash
# Fetch the Mutopia Project's LilyPond sources for `audiosheet corpus build --source mutopia:DIR`.
#
#   scripts/fetch_mutopia.sh DIR [SOURCE]
#
# SOURCE: a git URL or a local clone/mirror of MutopiaProject/MutopiaProject
# (default https://github.com/MutopiaProject/MutopiaProject.git). Nothing of it goes into our git:
# DIR is outside the repository or ignored. Writes DIR.provenance.txt: where it came from, the
# commit, the date, and the licences (every piece's own licence is in its .ly header — Public
# Domain or Creative Commons — and is kept in the corpus's scores/ID.json "header").
# An existing DIR is updated to SOURCE's newest commit instead.
set -euo pipefail
DIR=${1:?usage: scripts/fetch_mutopia.sh DIR [SOURCE]}
SRC=${2:-https://github.com/MutopiaProject/MutopiaProject.git}
if [ -d "$DIR/.git" ]; then
  git -C "$DIR" pull -q --ff-only
else
  git clone -q --depth 1 "$SRC" "$DIR" 2>/dev/null || git clone -q "$SRC" "$DIR"
fi
COMMIT=$(git -C "$DIR" rev-parse HEAD)
{
  echo "what:    the Mutopia Project's sources (https://www.mutopiaproject.org), MutopiaProject/MutopiaProject"
  echo "from:    $SRC"
  echo "commit:  $COMMIT"
  echo "fetched: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "licence: per piece, in each .ly header's license/copyright field (Public Domain, CC BY, CC BY-SA);"
  echo "         the corpus keeps every piece's header in scores/ID.json"
} > "$DIR.provenance.txt"
echo "$DIR: Mutopia at $COMMIT ($(find "$DIR/ftp" -name '*.ly' | wc -l) .ly files); provenance in $DIR.provenance.txt"

#!/usr/bin/env bash
# Extracts the King James Bible from Debian's bible-kjv-text package as plain English text:
# one verse per line (verse numbers stripped), a blank line between chapters, no book/chapter
# headings. The text (1611 translation) is in the public domain; see MODEL_CARD.md.
#
# The package stores the text in a compressed "Bible Retrieval System" format, so it is read back
# through the `bible` program of the bible-kjv package rather than parsed here.
#
# Usage: tools/train/prepare_corpus.sh [OUT_FILE]   (default: build/corpus/kjv.txt)
set -euo pipefail
out="${1:-build/corpus/kjv.txt}"
if ! command -v bible >/dev/null 2>&1 || ! dpkg -s bible-kjv-text >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends bible-kjv bible-kjv-text
fi
mkdir -p "$(dirname "$out")"
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
# -l100000: no line wrapping, so each verse is one line "  N text".
bible -l100000 "gen1:1-rev22:21" >"$tmp"
# Verse lines lose their number; a heading ("Genesis 1") becomes the blank line that separates
# chapters; the blank lines around headings are dropped.
awk '
  /^ +[0-9]+ / { sub(/^ +[0-9]+ /, ""); print; seen = 1; next }
  /^[^ ].* [0-9]+$/ { if (seen) print ""; next }
' "$tmp" >"$out"
verses=$(grep -c . "$out")
if [ "$verses" -ne 31102 ]; then
  echo "error: expected 31102 verses of the KJV, found $verses in $out" >&2
  exit 1
fi
echo "wrote $out: $verses verses, $(wc -c <"$out") bytes"

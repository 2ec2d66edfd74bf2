#!/usr/bin/env bash
# Seeds the cargo-fuzz corpora from the repository's own files (run from anywhere):
#   fuzz/seed.sh && cd fuzz && cargo fuzz run config corpus/config
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
corpus="$root/fuzz/corpus"
mkdir -p "$corpus"/{store,config,tokenizer_config,sampler}
find "$root/testdata" -name '*.safetensors' -size -300k -exec cp {} "$corpus/store/" \;
i=0
for f in $(find "$root/testdata" "$root/models" -name '*.json' -size -64k | grep -v tokenizer); do
    cp "$f" "$corpus/config/$i.json"; i=$((i + 1))
done
find "$root/testdata" "$root/models" -name 'tokenizer_config.json' | while read -r f; do
    cp "$f" "$corpus/tokenizer_config/$(echo "$f" | md5sum | cut -c1-8).json"
done
head -c 4096 /dev/zero > "$corpus/sampler/zeros"
echo "seeded $corpus"

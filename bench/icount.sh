#!/bin/bash
# usage: bench/icount.sh REPO_DIR [PY] [--cache]
# Deterministic cost of one in-memory small keep-alive request through the
# proxy in REPO_DIR (bench/inmemory.py): valgrind instruction counts of two
# runs (1,000 and 3,000 requests after a warm-up), difference / 2,000.
# Noise-free, unlike timings on a shared machine; about 70 s.  Both runs
# hash with the same seed: with random ones, their start-ups differ by
# millions of instructions, which the difference would count.  With
# --cache, every request is a cache hit (inmemory.py --cache).
REPO=${1:?repo dir}; PY=${2:-python3}
CACHE=False; [ "$3" = "--cache" ] && CACHE=True
cd "$REPO"
run() {
  PYTHONHASHSEED=0 PYTHONPATH="$REPO" valgrind --tool=callgrind --callgrind-out-file=/dev/null $PY -c "
import sys; sys.path.insert(0, 'bench')
import inmemory
proxy, backend = inmemory.setup($CACHE)
inmemory.run(proxy, backend, 500)
inmemory.run(proxy, backend, $1)
" 2>&1 | grep -o "Collected : [0-9]*" | awk '{print $3}'
}
A=$(run 1000); B=$(run 3000)
python3 -c "print(f'{($B-$A)/2000:.0f} instructions per request')"

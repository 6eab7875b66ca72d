#!/bin/bash
# usage: bench/icount.sh REPO_DIR [PY] [--cache | --h2]
# Deterministic cost of one in-memory small keep-alive request through the
# proxy in REPO_DIR (bench/inmemory.py): valgrind instruction counts of two
# runs (1,000 and 3,000 requests after a warm-up), difference / 2,000.
# Noise-free, unlike timings on a shared machine; about 70 s.  The modules
# are compiled before either run: a first run that compiles them costs
# ~160 M instructions more, which the difference would count.  Both runs
# hash with the same seed (seeds move the figure by ~0.5 %).  With
# --cache, every request is a cache hit (inmemory.py --cache); with --h2,
# the figure is per HTTP/2 stream (inmemory.py --h2).
REPO=${1:?repo dir}; PY=${2:-python3}
case "$3" in
  --cache) SETUP="setup(True)"; RUN=run; WHAT=request ;;
  --h2) SETUP="setup_h2()"; RUN=run_h2; WHAT="HTTP/2 stream" ;;
  *) SETUP="setup()"; RUN=run; WHAT=request ;;
esac
cd "$REPO"
run() {
  PYTHONHASHSEED=0 PYTHONPATH="$REPO" valgrind --tool=callgrind --callgrind-out-file=/dev/null $PY -c "
import sys; sys.path.insert(0, 'bench')
import inmemory
proxy, backend = inmemory.$SETUP
inmemory.$RUN(proxy, backend, 500)
inmemory.$RUN(proxy, backend, $1)
" 2>&1 | grep -o "Collected : [0-9]*" | awk '{print $3}'
}
PYTHONPATH="$REPO" $PY -c "import sys; sys.path.insert(0, 'bench'); import inmemory; inmemory.$SETUP"
A=$(run 1000); B=$(run 3000)
python3 -c "print(f'{($B-$A)/2000:.0f} instructions per $WHAT')"

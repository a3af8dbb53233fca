#!/usr/bin/env bash
# Overload: 192 customers offer, from one core, several times what one server worker takes (every
# packet sealed before the clock starts, then only replayed with sendmmsg; benches/pps.sh
# GEN=replay). With RATES, the same load is offered at each rate in turn (datagrams a second;
# "max" = as fast as the generator can): the delivered rate at the rate that just saturates the
# worker, beside the delivered rate far past it, shows whether it collapses (receive livelock).
# usage: sudo bash benches/overload.sh   env: N (192), T (4), SIZES ("1420 64"), PACKETS (4000000),
#   SERVERS (as pps.sh), RATES ("max"; e.g. "100000 200000 300000 max").
#   Namespaces are made and removed by pps.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export N=${N:-192} T=${T:-4} PACKETS=${PACKETS:-4000000} GEN=replay DIRS=in
for r in ${RATES:-max}; do
  echo "== offered rate: $r"
  if [ "$r" = max ]; then unset RATE; else export RATE=$r; fi
  bash "$here/pps.sh"
done

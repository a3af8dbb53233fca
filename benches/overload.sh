#!/usr/bin/env bash
# Overload: 192 customers offer, from one core, several times what one server worker takes (every
# packet sealed before the clock starts, then only replayed with sendmmsg; benches/pps.sh
# GEN=replay). The server's delivered rate under it, beside its rate in an ordinary pps.sh run at
# saturating load, shows whether it collapses (receive livelock).
# usage: sudo bash benches/overload.sh   env: N (192), T (4), SIZES ("1420 64"), PACKETS (4000000),
#   SERVERS (as pps.sh). Namespaces are made and removed by pps.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export N=${N:-192} T=${T:-4} PACKETS=${PACKETS:-4000000} GEN=replay DIRS=in
exec bash "$here/pps.sh"

# Sourced by benches/rig.sh and benches/latency.sh: the servers they compare, by name, as the
# command ../shared/rig/netns-rig.sh starts (it creates interface wgs). Needs $router (our
# release binary) and $wggo_new (the current wireguard-go, may be empty).

# Every server installed here, ours first.
all_servers() {
  local s="staticwire-router staticwire-router-batch staticwire-router-simple"
  [ -x "$wggo_new" ] && s="$s wireguard-go-new"
  for p in gotatun boringtun-cli wireguard-go; do command -v $p >/dev/null && s="$s $p"; done
  echo "$s"
}

server_cmd() {
  case $1 in
    staticwire-router) echo "$router wgs" ;;
    staticwire-router-batch) echo "$router --io batch wgs" ;;
    staticwire-router-simple) echo "$router --io simple wgs" ;;
    wireguard-go-new) echo "$wggo_new wgs" ;;
    gotatun) echo "gotatun --disable-drop-privileges wgs" ;;
    boringtun-cli) echo boringtun ;;
    wireguard-go) echo wggo ;;
    *) echo "unknown server $1" >&2; return 2 ;;
  esac
}

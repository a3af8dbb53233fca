# Sourced by ops/demo.sh and benches/pps.sh: the three-host topology of ../shared/rig, in network
# namespaces named by the caller. Needs CLI, SRV, INET (namespace names) and id (a prefix of at
# most 12 characters for the veth names).
#   customer 198.18.0.2 --- 198.18.0.1 provider 198.19.0.1 --- 198.19.0.2 internet
# The internet host routes the rented pool 203.0.113.0/24 to the provider; nothing else exists.

ex() { ip netns exec "$@"; }

netns_up() {
  for ns in $CLI $SRV $INET; do ip netns add $ns; ex $ns ip link set lo up; done
  ip link add ${id}a type veth peer name ${id}b; ip link set ${id}a netns $CLI; ip link set ${id}b netns $SRV
  ip link add ${id}x type veth peer name ${id}y; ip link set ${id}x netns $INET; ip link set ${id}y netns $SRV
  ex $CLI ip addr add 198.18.0.2/24 dev ${id}a; ex $CLI ip link set ${id}a up
  ex $SRV ip addr add 198.18.0.1/24 dev ${id}b; ex $SRV ip link set ${id}b up
  ex $SRV ip addr add 198.19.0.1/24 dev ${id}y; ex $SRV ip link set ${id}y up
  ex $INET ip addr add 198.19.0.2/24 dev ${id}x; ex $INET ip link set ${id}x up
  ex $INET ip route add 203.0.113.0/24 via 198.19.0.1
  ex $SRV sysctl -qw net.ipv4.ip_forward=1
}

# Kills every process inside the namespaces, then deletes them (and their veths).
netns_down() {
  for ns in $CLI $SRV $INET; do
    for p in $(ip netns pids $ns 2>/dev/null); do kill $p 2>/dev/null || true; done
  done
  sleep 0.3
  for ns in $CLI $SRV $INET; do ip netns del $ns 2>/dev/null || true; done
}

#!/usr/bin/env bash
# Makes the certificates of mutual TLS between nodes (--peer-tls-*) with openssl: a cluster CA, then one
# certificate per node, valid for both server and client use and naming the host other nodes dial it at (the host
# of its --peer-advertise, or of --peer-listen).
#
#   docs/peer-certs.sh DIR NAME=HOST [NAME=HOST ...]
#   e.g. docs/peer-certs.sh /etc/dynamo-kv/tls n1=10.0.0.1 n2=10.0.0.2 n3=db3.internal
#
# Writes DIR/ca.pem (give it to every node as --peer-tls-ca-file), DIR/ca.key (keep it offline: whoever holds it
# can mint members), and DIR/NAME.pem + DIR/NAME.key for each node. An existing CA in DIR is reused, so a node
# added later gets a certificate from the same CA.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
dir=$1; shift
mkdir -p "$dir"
umask 077
if [ ! -f "$dir/ca.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=dynamo-kv cluster CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2> /dev/null
fi
for spec in "$@"; do
  name=${spec%%=*}; host=${spec#*=}
  [ -n "$name" ] && [ -n "$host" ] && [ "$name" != "$spec" ] || { echo "expected NAME=HOST, got $spec" >&2; exit 2; }
  if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then san="IP:$host,DNS:$name"; else san="DNS:$host,DNS:$name"; fi
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$dir/$name.key" -out "$dir/$name.csr" 2> /dev/null
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 825 \
    -out "$dir/$name.pem" \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san") 2> /dev/null
  rm -f "$dir/$name.csr"
  echo "$dir/$name.pem ($san)"
done

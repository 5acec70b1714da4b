#!/usr/bin/env bash
# Makes a small CA for a test or pilot deployment, with openssl:
#   deploy/make-test-ca.sh DIR COLLECTOR_HOST_OR_IP [GATEWAY_ID...]
# DIR/ca.pem          the CA certificate: [mqtt.tls] ca_file on the collector, uplink.ca_file on agents
# DIR/collector.pem   server certificate for COLLECTOR_HOST_OR_IP, DIR/collector.key its key
# DIR/broker.pem      server certificate of an external Mosquitto (deploy/mosquitto.conf) for
#                     BROKER_HOST (environment; default COLLECTOR_HOST_OR_IP), DIR/broker.key its key
# DIR/GATEWAY.pem     client certificate per gateway (CN = gateway id), DIR/GATEWAY.key its key
# DIR/ca.key stays with whoever issues certificates, never on a gateway or the collector.
# A production city uses its own PKI; the files and settings are the same.
set -euo pipefail
dir=${1:?usage: make-test-ca.sh DIR COLLECTOR_HOST_OR_IP [GATEWAY_ID...]}
host=${2:?usage: make-test-ca.sh DIR COLLECTOR_HOST_OR_IP [GATEWAY_ID...]}
shift 2
mkdir -p "$dir"
cd "$dir"
umask 077
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
[ -f ca.key ] || key ca.key
[ -f ca.pem ] || openssl req -x509 -new -key ca.key -out ca.pem -days 3650 -subj "/CN=citysense test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
broker=${BROKER_HOST:-$host}
san() { if [[ $1 =~ ^[0-9.]+$ || $1 == *:* ]]; then echo "IP:$1"; else echo "DNS:$1"; fi; }
issue() { # name cn usage san
  key "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2"
  printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=%s\n%s' "$3" "${4:+subjectAltName=$4}" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" -days 825 -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
  echo "$dir/$1.pem ($3, CN=$2)"
}
issue collector "$host" serverAuth "$(san "$host")"
issue broker "$broker" serverAuth "$(san "$broker")"
for gw in "$@"; do issue "$gw" "$gw" clientAuth; done

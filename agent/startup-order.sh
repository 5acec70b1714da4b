#!/bin/bash
# Rewrites agent/startup-order.txt: the functions the release agent runs while
# it starts, polls 10 Modbus devices x 20 points once, fails to reach its
# broker, answers /status and idles (and, when mosquitto is installed, while
# it connects and sends). shared/build_rev.rs hands the file to the linker,
# which places those functions together: start-up then faults in ~1.4 MB of
# contiguous code instead of touching most of the 6.8 MB text in the pieces
# the kernel maps per fault, all of which stay resident (idle RSS 9.0 -> ~7
# MiB). Run it after changing dependencies, their features or the release
# profile (the symbol names change with them); a stale file only loses the
# saving. Needs valgrind, python3 with pymodbus, curl; takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

# The shipped profile, plus a link map to name the functions of the stripped binary.
cargo rustc --release -p citysense-agent --bin citysense-agent -- -C "link-arg=-Wl,-Map=$work/agent.map"
bin=$work/citysense-agent
cp target/release/citysense-agent "$bin"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
modbus=$(free_port)
python3 tests/interop/pymodbus_server.py "$modbus" >"$work/pymodbus.log" 2>&1 &
pids+=($!)
until (exec 3<>"/dev/tcp/127.0.0.1/$modbus") 2>/dev/null; do sleep 0.1; done

# One profile run: the agent under callgrind until 200 readings are durable,
# /status asked a few times, idle a while, then SIGTERM (callgrind writes on exit).
profile() {
    local name=$1 broker=$2 status
    status=$(free_port)
    {
        printf 'gateway = "gw-order"\n[uplink]\nbroker = "%s"\n[buffer]\npath = "%s"\n[status]\nlisten = "127.0.0.1:%s"\n' "$broker" "$work/outbox-$name" "$status"
        for d in $(seq 0 9); do
            printf '[[modbus]]\nsensor = "dev-%s"\naddress = "tcp://127.0.0.1:%s"\nunit = 1\ninterval = "1h"\n' "$d" "$modbus"
            for i in $(seq 0 19); do printf '  [[modbus.point]]\n  metric = "p%s"\n  table = "holding"\n  address = %s\n  type = "u16"\n' "$i" "$i"; done
        done
    } >"$work/$name.toml"
    valgrind --tool=callgrind --callgrind-out-file="$work/$name.cg" "$bin" run --config "$work/$name.toml" >"$work/$name.log" 2>&1 &
    local agent=$!
    pids+=($agent)
    local tries=0
    until curl -sf "127.0.0.1:$status/status" | grep -q '"durable_seq":[0-9]\{3\}'; do
        tries=$((tries + 1))
        [ $tries -lt 600 ] || { echo "startup-order: the $name agent never made 200 readings durable" >&2; cat "$work/$name.log" >&2; exit 1; }
        sleep 0.2
    done
    for _ in 1 2 3; do curl -sf "127.0.0.1:$status/status" >/dev/null; sleep 2; done
    kill -TERM $agent
    wait $agent || true
}
profile unreachable "mqtt://127.0.0.1:9"
if command -v mosquitto >/dev/null; then
    broker=$(free_port)
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n' "$broker" >"$work/mosquitto.conf"
    mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
    pids+=($!)
    until (exec 3<>"/dev/tcp/127.0.0.1/$broker") 2>/dev/null; do sleep 0.1; done
    profile connected "mqtt://127.0.0.1:$broker"
fi

# callgrind names the stripped binary's code by address; the map says which
# function (input section .text.NAME) holds each address.
python3 - "$work/agent.map" "$bin" "$work"/*.cg >agent/startup-order.txt <<'EOF'
import bisect, re, sys
mapfile, binary, outs = sys.argv[1], sys.argv[2], sys.argv[3:]
starts, names = [], []
for line in open(mapfile):
    m = re.match(r'\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+\s+\S*:\(\.text\.(\S+)\)$', line)
    if m and int(m.group(2), 16) > 0:
        # LLVM may prefix a cold or hot function's section; the symbol is the rest.
        name = re.sub(r'^(unlikely|hot|startup|exit)\.', '', m.group(3))
        starts.append((int(m.group(1), 16), int(m.group(2), 16), name))
starts.sort()
addrs = [s[0] for s in starts]
order, seen = [], set()
for out in outs:
    objs, fns, ob = {}, {}, None
    for line in open(out):
        m = re.match(r'^(c?ob)=\((\d+)\)(?: (.*))?$', line.rstrip('\n'))
        if m:
            if m.group(3):
                objs[m.group(2)] = m.group(3)
            if m.group(1) == 'ob':
                ob = objs[m.group(2)]
            continue
        m = re.match(r'^(c?fn)=\((\d+)\)(?: (.*))?$', line.rstrip('\n'))
        if not m:
            continue
        if m.group(3):
            fns[m.group(2)] = m.group(3)
        if m.group(1) != 'fn' or ob != binary:
            continue
        name = fns[m.group(2)]
        if not name.startswith('0x'):
            continue
        # callgrind marks a recursion level or context with a suffix: 0x...'2
        a = int(name.split("'")[0], 16)
        i = bisect.bisect_right(addrs, a) - 1
        if i >= 0 and a < starts[i][0] + starts[i][1] and starts[i][2] not in seen:
            seen.add(starts[i][2])
            order.append(starts[i][2])
if len(order) < 500:
    sys.exit(f"startup-order: only {len(order)} functions named: is {mapfile} the map of {binary}?")
print('\n'.join(order))
EOF
echo "startup-order: $(wc -l <agent/startup-order.txt) functions in agent/startup-order.txt"

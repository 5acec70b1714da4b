#!/bin/sh
# Adds a user to the broker cluster's users.conf (deploy/nats/node.conf
# includes it; copy the same file to every node and reload: kill -HUP).
#
#   add-user.sh USERS_FILE collector NAME    the collectors' login (mqtt.username)
#   add-user.sh USERS_FILE gateway GATEWAY   a gateway: its own uplink topics, its own acks
#   add-user.sh USERS_FILE reader NAME       a feed consumer: alerts, live readings, incidents
#
# The password is read from PASSWORD, or prompted. NATS compares it as
# written, so the file stays readable by the server's user only.
set -eu
file=$1 role=$2 name=$3
case "$name" in
  *[!A-Za-z0-9_-]*|"") echo "add-user.sh: \`$name\` is not a valid name: letters, digits, - and _ (a . would split NATS subjects)" >&2; exit 2 ;;
esac
if [ -z "${PASSWORD:-}" ]; then
  printf 'password for %s: ' "$name" >&2
  stty -echo 2>/dev/null || true; read -r PASSWORD; stty echo 2>/dev/null || true; echo >&2
fi
case "$PASSWORD" in *\"*|*\\*|"") echo "add-user.sh: the password must be non-empty, without \" or \\" >&2; exit 2 ;; esac
if [ -f "$file" ] && grep -q "user: \"$name\"" "$file"; then
  echo "add-user.sh: $name is already in $file" >&2; exit 2
fi
# MQTT topic citysense/v1/up/GW is NATS subject citysense.v1.up.GW.
case "$role" in
  collector) perms='publish: ">", subscribe: ">"' ;;
  gateway) perms="publish: [\"citysense.v1.up.$name\", \"citysense.v1.state.$name\", \"citysense.v1.health.$name\"], subscribe: [\"citysense.v1.ack.$name\"]" ;;
  # MQTT's `alerts/#` also matches `alerts` itself: NATS subscribes to both
  # subjects and refuses the whole subscription if either is not allowed.
  reader) perms='publish: [], subscribe: ["citysense.v1.alerts", "citysense.v1.alerts.>", "citysense.v1.live", "citysense.v1.live.>", "citysense.v1.incidents", "citysense.v1.incidents.>"]' ;;
  *) echo "add-user.sh: role is collector, gateway or reader, not \`$role\`" >&2; exit 2 ;;
esac
umask 077
[ -f "$file" ] || printf 'users: [\n]\n' > "$file"
# One user a line, inside the list that ends on the file's last line.
tmp="$file.new"
sed '$d' "$file" > "$tmp"
printf '  { user: "%s", password: "%s", permissions: { %s } }\n]\n' "$name" "$PASSWORD" "$perms" >> "$tmp"
mv "$tmp" "$file"

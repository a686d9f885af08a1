#!/bin/bash
# Writes server.properties from the KAFKA_* variables, formats the storage on the first start,
# and runs the broker.
set -euo pipefail
props=/opt/kafka/config/server.properties
: >"$props"
while IFS='=' read -r name value; do
    [[ $name == KAFKA_* && $name != KAFKA_HEAP_OPTS ]] || continue
    key=${name#KAFKA_}
    key=${key,,}
    echo "${key//_/.}=$value" >>"$props"
done < <(env)
grep -q '^log\.dirs=' "$props" || echo "log.dirs=/var/lib/kafka/data" >>"$props"
# shellcheck disable=SC2206 # the heap options are words
java_opts=(${KAFKA_HEAP_OPTS:--Xmx512m} -Dlog4j.configuration=file:/opt/kafka/config/log4j.properties
    -cp '/opt/kafka/libs/*')
dir=$(sed -n 's/^log\.dirs=//p' "$props")
if [[ ! -f $dir/meta.properties ]]; then
    java "${java_opts[@]}" kafka.tools.StorageTool format -t "${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}" \
        -c "$props" >/dev/null
fi
exec java "${java_opts[@]}" -XX:+UseG1GC -Djava.awt.headless=true kafka.Kafka "$props"

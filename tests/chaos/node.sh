#!/bin/bash
# node.sh start|term|kill|status NAME  — NAME in api-a api-b exec-a exec-b; PGPORT env overrides the PostgreSQL port.
. "$(dirname "$0")/env.sh"
declare -A PORT=([api-a]=8170 [api-b]=8171 [exec-a]=8172 [exec-b]=8173)
declare -A ROLE=([api-a]=api [api-b]=api [exec-a]=executor [exec-b]=executor)
n=$2; id=chaos-$n; pidf=$CH/$n.pid
case $1 in
  start) ( node_env $id ${ROLE[$n]} ${PGPORT:-5432}; cd $CH_API
           setsid dotnet $CH_DLL --contentRoot $CH_API --urls http://127.0.0.1:${PORT[$n]} >>$CH/logs/$n.log 2>&1 </dev/null & echo $! > $pidf )
         echo "$(date -u +%T.%N | cut -c1-12) start $n pid $(cat $pidf)" | tee -a $CH/events.log ;;
  term) echo "$(date -u +%T.%N | cut -c1-12) term $n pid $(cat $pidf)" | tee -a $CH/events.log; kill -TERM $(cat $pidf) ;;
  kill) echo "$(date -u +%T.%N | cut -c1-12) kill9 $n pid $(cat $pidf)" | tee -a $CH/events.log; kill -9 $(cat $pidf) ;;
  ready) for i in $(seq 1 240); do curl -fsS -o /dev/null http://127.0.0.1:${PORT[$n]}/readyz 2>/dev/null && { echo "$(date -u +%T.%N | cut -c1-12) ready $n" | tee -a $CH/events.log; exit 0; }; kill -0 $(cat $pidf) 2>/dev/null || { echo "$n exited"; tail -20 $CH/logs/$n.log; exit 1; }; sleep 0.5; done; echo "$n not ready"; exit 1 ;;
  wait) for i in $(seq 1 120); do kill -0 $(cat $pidf) 2>/dev/null || { echo "$(date -u +%T.%N | cut -c1-12) exited $n" | tee -a $CH/events.log; exit 0; }; sleep 0.25; done; echo "$n still running"; exit 1 ;;
esac

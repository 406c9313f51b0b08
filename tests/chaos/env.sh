# Shared settings for the chaos cluster (source it). Four nodes: api-a 8170, api-b 8171, exec-a 8172, exec-b 8173.
S=/var/lib/sandbox-audited/secrets
# CH (state and logs), CH_DB (database) and CH_API (the published Api) may be set beforehand to keep runs apart.
export CH=${CH:-/tmp/chaos}; mkdir -p $CH/logs $CH/journal
export CH_DB=${CH_DB:-chaos_h8}
export CH_API=${CH_API:-/tmp/chaos-api}
export CH_DLL=$CH_API/Sandbox.Audited.Api.dll
export PGPASSWORD=$(cat $S/pg-admin)
export PSQL="psql -h 127.0.0.1 -U sandbox_admin -d $CH_DB -X -q -A"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
node_env() { # node_env ID ROLES PGPORT
  export ConnectionStrings__Sandbox="Host=127.0.0.1;Port=${3:-5432};Database=$CH_DB;Username=sandbox_app;Password=$(cat $S/pg-app);Maximum Pool Size=20;Application Name=$1"
  export ConnectionStrings__Admin="Host=127.0.0.1;Port=5432;Database=$CH_DB;Username=sandbox_admin;Password=$(cat $S/pg-admin)"
  export Auth__Mode=development Auth__Issuer=sandbox-audited-dev Auth__Audience=sandbox-audited Auth__DevelopmentKeyPath=$CH/dev-key.pem
  export Policies__Directory=$ROOT/policies Runtimes__Directory=$ROOT/runtimes Runtimes__SbomDirectory=/var/lib/sandbox-audited/sboms
  export Migrations__Directory=$ROOT/migrations
  export Audit__CheckpointKeyPath=$CH/cp-key.pem Audit__NoteKeyPath=$CH/note-key.pem
  export Executor__NodeId=$1 Node__Roles=$2 Executor__JournalDirectory=$CH/journal Executor__PoolSizePerLanguage=1
  export Queue__LeaseSeconds=6 Queue__HeartbeatSeconds=2 Queue__AbandonGraceSeconds=8
  export Callbacks__AllowLoopback=true Callbacks__Secrets__chaos=cbsecret Shutdown__GraceSeconds=15
  export DOTNET_gcServer=0
}

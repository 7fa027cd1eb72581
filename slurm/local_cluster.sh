#!/usr/bin/env bash
# A real, single-machine SLURM (Debian/Ubuntu packages) for tests and for trying `vjepa launch`.
#
#   slurm/local_cluster.sh install   apt-get the packages (root; quick no-op when installed)
#   slurm/local_cluster.sh start     bring the cluster up (idempotent; no-op when healthy)
#   slurm/local_cluster.sh stop      cancel all jobs, stop every daemon (idempotent)
#   slurm/local_cluster.sh status    daemons, sinfo, squeue; exit 0 when healthy, else 1
#
# What `start` runs, without systemd, as plain background daemons:
#   munged                  the system one when it already answers, else started here
#   mariadbd                private instance: datadir and unix socket under the state dir, no TCP
#   slurmdbd                accounting (submitit polls `sacct`: without it job states stay UNKNOWN)
#   slurmctld               the controller
#   slurmd -N n1, -N n2     two fake nodes on this host (distinct ports): a real 2-node allocation
# One partition, `debug` (default, no time limit), with nodes n1 and n2. Each node gets this
# machine's full topology from `slurmd -C`, so the cores are oversubscribed twice: fine for tests.
#
# Everything it writes (configs, logs, pid files, spool, database) lives in the state dir,
# $VJEPA_SLURM_STATE (default /var/lib/vjepa-slurm), except two things clients need in their
# standard places: the symlink /etc/slurm/slurm.conf -> <state>/etc/slurm.conf (so plain `sinfo`,
# `sbatch`, submitit work; not made when a different slurm.conf is there: then export SLURM_CONF)
# and munge's own key and socket (/etc/munge/munge.key, /run/munge). Logs: <state>/log/.
set -euo pipefail

STATE="${VJEPA_SLURM_STATE:-/var/lib/vjepa-slurm}"
CLUSTER="${VJEPA_SLURM_CLUSTER:-vjepa}"
PARTITION="debug"
NODES=(n1 n2)
CTLD_PORT="${VJEPA_SLURM_PORT:-6817}"   # slurmctld; slurmdbd = +2, nodes = +4, +5
DBD_PORT=$((CTLD_PORT + 2))
NODE_PORT_BASE=$((CTLD_PORT + 4))
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

ETC="$STATE/etc" LOG="$STATE/log" RUN="$STATE/run" SPOOL="$STATE/spool" DB="$STATE/mysql"
export SLURM_CONF="$ETC/slurm.conf"      # daemons find slurmdbd.conf/cgroup.conf next to it
MYSQL_SOCK="$DB/mysqld.sock"           # inside the root-only datadir
SYSTEM_CONF=/etc/slurm/slurm.conf

say() { echo "local_cluster: $*"; }
die() { echo "local_cluster: error: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "'$1' needs root (it runs system daemons); try: sudo $0 $1"; }

# ---------------------------------------------------------------------------------- helpers
alive() { # process exists and is not a zombie (an init that reaps slowly leaves zombies around)
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"   # fields after "pid (comm) ": the first is the state letter
    [[ $stat != Z* ]]
}

pid_of() { # pid from a pid file, only if that process is alive
    local f="$1" pid
    [ -s "$f" ] || return 1
    pid="$({ tr -dc 0-9 <"$f"; } 2>/dev/null)"
    [ -n "$pid" ] && alive "$pid" && echo "$pid"
}

wait_for() { # wait_for SECONDS WHAT COMMAND...: poll every 0.2 s until COMMAND succeeds
    local secs="$1" i   # WHAT only tells the reader what is awaited
    shift 2
    for ((i = 0; i < secs * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

stop_pids() { # stop_pids NAME PID...: SIGTERM all, wait up to 20 s, then SIGKILL
    local name="$1" pid i left
    shift
    [ $# -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        left=()
        for pid in "$@"; do alive "$pid" && left+=("$pid"); done
        [ ${#left[@]} -eq 0 ] && { say "stopped $name"; return 0; }
        sleep 0.2
    done
    say "warning: $name (pid ${left[*]}) ignored SIGTERM for 20 s; killing"
    kill -KILL "${left[@]}" 2>/dev/null || true
}

daemon() { # daemon LOGBASE COMMAND...: detached from this shell, stdio to LOGBASE.out
    local out="$1.out"
    shift
    setsid "$@" </dev/null >>"$out" 2>&1 &
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
mysql_ok() { mariadb-admin --no-defaults --socket="$MYSQL_SOCK" -uroot ping >/dev/null 2>&1; }
no_jobs() { [ -z "$(squeue -h -o %i 2>/dev/null)" ]; }
sacct_ok() { sacct -n -X -S now-1minutes >/dev/null 2>&1; }

node_states() { # "n1 idle" lines; '*' suffix = not responding
    timeout 10 sinfo -h -N -p "$PARTITION" -o '%N %T' 2>/dev/null | sort -u
}

nodes_ready() { # both nodes registered and usable (idle, or busy with jobs)
    local states
    states="$(node_states)" || return 1
    for n in "${NODES[@]}"; do
        grep -Eq "^$n (idle|mixed|allocated|completing)$" <<<"$states" || return 1
    done
}

nodes_responding() { # both nodes known to slurmctld and answering (sinfo marks others with '*')
    local states
    states="$(node_states)" || return 1
    for n in "${NODES[@]}"; do
        grep -Eq "^$n [a-z+_]+$" <<<"$states" || return 1
    done
}

healthy() {
    pid_of "$RUN/mariadbd.pid" >/dev/null && pid_of "$RUN/slurmdbd.pid" >/dev/null \
        && pid_of "$RUN/slurmctld.pid" >/dev/null || return 1
    for n in "${NODES[@]}"; do pid_of "$RUN/slurmd-$n.pid" >/dev/null || return 1; done
    munge_ok && nodes_ready && sacct_ok
}

have_packages() {
    command -v slurmctld && command -v slurmd && command -v slurmdbd && command -v sinfo \
        && command -v munged && command -v mariadbd
} >/dev/null 2>&1

# ---------------------------------------------------------------------------------- install
cmd_install() {
    if have_packages; then say "packages already installed"; return 0; fi
    need_root install
    command -v apt-get >/dev/null || die "no apt-get here: install SLURM, munge and MariaDB yourself"
    say "installing ${PACKAGES[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}")
    # Try with the current package lists first; refresh them only when that fails.
    "${apt[@]}" >/dev/null 2>&1 || { apt-get update -qq && "${apt[@]}" >/dev/null; }
    have_packages || die "packages installed but some daemons are still missing"
    say "installed"
}

# ---------------------------------------------------------------------------------- configs
write_configs() {
    # Node topology as slurmd sees it, e.g. "CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2
    # ThreadsPerCore=1 RealMemory=24105"; each fake node declares all of it.
    local topo
    topo="$(slurmd -C | head -n1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ *UpTime=.*//')"
    [ -n "$topo" ] || die "slurmd -C printed no topology"

    mkdir -p "$ETC"
    cat >"$ETC/slurm.conf" <<EOF
# Written by local_cluster.sh (rewritten on each cold start). Single-machine test cluster.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Credentials expire after 10 s instead of 120 s: a requeued job can restart on the same
# node about 12 s after it stopped, instead of about 2 minutes.
AuthInfo=cred_expire=10
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# No systemd and no cgroup delegation needed: track job processes through /proc.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
# Consumable CPUs: several small jobs share a node; a 2-node job gets n1 and n2.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2,sched_interval=1
JobRequeue=1
KillWait=5
InactiveLimit=0
MinJobAge=300
SlurmdTimeout=60
# Nodes that were DOWN come back by themselves when their slurmd registers again.
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
JobCompType=jobcomp/none
MailProg=/bin/true

EOF
    local i=0 n
    for n in "${NODES[@]}"; do
        echo "NodeName=$n NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((NODE_PORT_BASE + i))" \
            "$topo State=UNKNOWN" >>"$ETC/slurm.conf"
        i=$((i + 1))
    done
    local nodelist
    nodelist="$(IFS=,; echo "${NODES[*]}")"
    echo "PartitionName=$PARTITION Nodes=$nodelist Default=YES MaxTime=INFINITE State=UP" >>"$ETC/slurm.conf"

    # cgroups stay unused (see ProctrackType/TaskPlugin above): works in containers, with
    # cgroup v1 or v2, with or without systemd.
    cat >"$ETC/cgroup.conf" <<EOF
CgroupPlugin=autodetect
IgnoreSystemd=yes
EOF

    # slurmdbd talks to the private MariaDB through its unix socket (MYSQL_UNIX_PORT, below).
    cat >"$ETC/slurmdbd.conf" <<EOF
# Written by local_cluster.sh.
AuthType=auth/munge
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$ETC/slurmdbd.conf"
    # Empty plugin stack (Debian's /etc/slurm/plugstack.conf would be used otherwise).
    : >"$ETC/plugstack.conf"

    # Let plain client commands find the config.
    if [ -L "$SYSTEM_CONF" ] || [ ! -e "$SYSTEM_CONF" ]; then
        mkdir -p "$(dirname "$SYSTEM_CONF")"
        ln -sfn "$ETC/slurm.conf" "$SYSTEM_CONF"
    elif ! cmp -s "$SYSTEM_CONF" "$ETC/slurm.conf"; then
        say "note: $SYSTEM_CONF is someone else's; to use this cluster: export SLURM_CONF=$ETC/slurm.conf"
    fi
}

# ---------------------------------------------------------------------------------- daemons
start_munge() {
    if munge_ok; then return 0; fi
    [ -s /etc/munge/munge.key ] || {
        say "creating munge key"
        if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
        else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null; fi
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    }
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    # runuser, not sudo: no PAM session needed; munged forks into the background itself.
    runuser -u munge -- munged </dev/null >>"$LOG/munged.out" 2>&1
    wait_for 10 munge munge_ok || die "munged did not come up (see /var/log/munge/munged.log)"
    # Remember that this script owns munged, so `stop` stops only a munged it started.
    cp /run/munge/munged.pid "$RUN/munged.pid"
    say "started munged"
}

start_mariadb() {
    if pid_of "$RUN/mariadbd.pid" >/dev/null; then   # running (maybe still starting up)
        wait_for 30 mariadb mysql_ok && return 0
        die "MariaDB runs but does not answer (see $LOG/mariadbd.log); try: $0 stop"
    fi
    local fresh=0
    if [ ! -d "$DB/mysql" ]; then
        fresh=1
        say "initialising MariaDB in $DB"
        mkdir -p "$DB"
        mariadb-install-db --no-defaults --user=root --datadir="$DB" --skip-test-db \
            --auth-root-authentication-method=socket >"$LOG/mariadb-install.log" 2>&1 \
            || die "mariadb-install-db failed (see $LOG/mariadb-install.log)"
    fi
    chmod 700 "$DB"   # holds the socket too: only root reaches the database
    # Private instance: no TCP; --no-defaults ignores /etc/mysql. InnoDB sizes as slurmdbd advises.
    daemon "$LOG/mariadbd" mariadbd --no-defaults --user=root --datadir="$DB" \
        --socket="$MYSQL_SOCK" --pid-file="$RUN/mariadbd.pid" --skip-networking \
        --log-error="$LOG/mariadbd.log" --performance-schema=OFF \
        --innodb-buffer-pool-size=128M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900
    wait_for 30 mariadb mysql_ok || die "MariaDB did not come up (see $LOG/mariadbd.log)"
    chmod 644 "$RUN/mariadbd.pid"   # let `status` work for everyone
    mariadb --no-defaults --socket="$MYSQL_SOCK" -uroot <<'EOF'
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
    say "started MariaDB ($([ $fresh = 1 ] && echo new || echo existing) database)"
}

start_slurmdbd() {
    if pid_of "$RUN/slurmdbd.pid" >/dev/null; then return 0; fi
    # MYSQL_UNIX_PORT: where the MariaDB client library looks for the "localhost" socket.
    MYSQL_UNIX_PORT="$MYSQL_SOCK" daemon "$LOG/slurmdbd" slurmdbd
    wait_for 30 slurmdbd sacctmgr -n show cluster || die "slurmdbd did not come up (see $LOG/slurmdbd.log)"
    say "started slurmdbd"
    # Register the cluster (slurmdbd itself creates the account and user `root` with it) so
    # that jobs land in the database and `sacct` lists them.
    if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    if ! sacctmgr -n -P show assoc cluster="$CLUSTER" user=root format=user | grep -qx root; then
        sacctmgr -i add user root account=root cluster="$CLUSTER" >/dev/null
    fi
}

start_slurmctld() {
    if pid_of "$RUN/slurmctld.pid" >/dev/null; then return 0; fi
    mkdir -p "$SPOOL/ctld"
    daemon "$LOG/slurmctld" slurmctld
    wait_for 30 slurmctld scontrol ping || die "slurmctld did not come up (see $LOG/slurmctld.log)"
    say "started slurmctld"
}

start_slurmd() {
    local n="$1"
    if pid_of "$RUN/slurmd-$n.pid" >/dev/null; then return 0; fi
    mkdir -p "$SPOOL/$n"
    daemon "$LOG/slurmd-$n" slurmd -N "$n"
    wait_for 15 "slurmd $n" pid_of "$RUN/slurmd-$n.pid" \
        || die "slurmd $n did not come up (see $LOG/slurmd-$n.log)"
    say "started slurmd $n"
}

resume_drained() { # nodes left DRAIN/DOWN by an unclean stop are ours: put them back
    local n state
    while read -r n state; do
        case "$state" in
            *drain* | *down* | *fail*)
                say "resuming node $n (was $state)"
                scontrol update nodename="$n" state=resume || true ;;
        esac
    done < <(node_states)
}

cmd_start() {
    need_root start
    have_packages || die "SLURM/munge/MariaDB not installed; run: $0 install"
    if healthy; then say "already running and healthy; nothing to do"; return 0; fi
    local t0=$SECONDS
    mkdir -p "$STATE" "$LOG" "$RUN" "$SPOOL"
    # Rewrite the configs only when no SLURM daemon runs (never under a live daemon's feet).
    local live=0 f
    for f in "$RUN"/slurmctld.pid "$RUN"/slurmd-*.pid "$RUN"/slurmdbd.pid; do
        pid_of "$f" >/dev/null && live=1
    done
    [ $live = 1 ] || write_configs
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurmctld
    local n
    for n in "${NODES[@]}"; do start_slurmd "$n"; done
    # Once both slurmd answer, put back nodes a previous unclean stop left drained.
    wait_for 20 "nodes to register" nodes_responding && resume_drained
    wait_for 20 nodes nodes_ready \
        || { node_states; die "nodes not ready (see $LOG/slurmd-*.log, $LOG/slurmctld.log)"; }
    wait_for 20 sacct sacct_ok || die "sacct does not answer (see $LOG/slurmdbd.log)"
    say "cluster '$CLUSTER' up in $((SECONDS - t0)) s: partition '$PARTITION'," \
        "nodes ${NODES[*]}; state in $STATE"
}

# ---------------------------------------------------------------------------------- stop
cmd_stop() {
    need_root stop
    local pid n
    # 1. Cancel all jobs and wait for them to leave (stopping slurmd under a job drains the node).
    if pid_of "$RUN/slurmctld.pid" >/dev/null && scontrol ping >/dev/null 2>&1; then
        if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
            say "cancelling all jobs"
            squeue -h -o %i | xargs -r scancel || true
            # squeue lists pending, running and completing jobs, not finished ones.
            wait_for 60 "jobs to leave" no_jobs || say "warning: some jobs are still there after 60 s"
        fi
    fi
    # 2. SLURM daemons, nodes first, then the controller and accounting; then the database.
    local pids=()
    for n in "${NODES[@]}"; do pid="$(pid_of "$RUN/slurmd-$n.pid")" && pids+=("$pid"); done
    stop_pids "slurmd ${NODES[*]}" "${pids[@]}"
    pid="$(pid_of "$RUN/slurmctld.pid")" && stop_pids slurmctld "$pid"
    pid="$(pid_of "$RUN/slurmdbd.pid")" && stop_pids slurmdbd "$pid"
    pid="$(pid_of "$RUN/mariadbd.pid")" && stop_pids mariadbd "$pid"
    # 3. munged, only when this script started it.
    pid="$(pid_of "$RUN/munged.pid")" && stop_pids munged "$pid"
    rm -f "$RUN"/*.pid
    say "stopped (state kept in $STATE)"
}

# ---------------------------------------------------------------------------------- status
cmd_status() {
    local pid name ok=0
    show() { # show NAME PIDFILE
        if pid="$(pid_of "$2")"; then printf '  %-12s up (pid %s)\n' "$1" "$pid"
        else printf '  %-12s down\n' "$1"; ok=1; fi
    }
    echo "state dir: $STATE"
    if munge_ok; then printf '  %-12s up\n' munged; else printf '  %-12s down\n' munged; ok=1; fi
    show mariadbd "$RUN/mariadbd.pid"
    show slurmdbd "$RUN/slurmdbd.pid"
    show slurmctld "$RUN/slurmctld.pid"
    for name in "${NODES[@]}"; do show "slurmd $name" "$RUN/slurmd-$name.pid"; done
    if pid_of "$RUN/slurmctld.pid" >/dev/null; then
        echo; timeout 10 sinfo || ok=1
        echo; timeout 10 squeue || ok=1
        nodes_ready || { echo "nodes not ready (drained? see slurm/README.md)"; ok=1; }
        sacct_ok || { echo "sacct does not answer"; ok=1; }
    fi
    [ $ok = 0 ] && echo "healthy" || echo "not healthy"
    return $ok
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 {install|start|stop|status}" \
            "(state dir: \$VJEPA_SLURM_STATE, default /var/lib/vjepa-slurm)" >&2
       exit 2 ;;
esac

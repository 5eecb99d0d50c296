#!/usr/bin/env bash
# A real, local Slurm cluster for the tests: two compute nodes (n1, n2) on this one machine, with
# accounting (slurmdbd + a private MariaDB) so that `sacct` works.
#
#   bash slurm/local_cluster.sh start    # install if missing, configure, start, probe (idempotent)
#   bash slurm/local_cluster.sh stop     # stop every daemon it started (exit 0 if already stopped)
#   bash slurm/local_cluster.sh status   # exit 0 if up, 1 if not
#
# Needs root (Debian 12). Everything it writes lives under $LAUNCHER_SLURM_DIR
# (default /var/tmp/launcher-slurm), plus /etc/slurm/slurm.conf (so sbatch/srun/submitit find the
# cluster without SLURM_CONF) and a `127.0.0.1 n1 n2` line in /etc/hosts.
# Facts behind the settings: slurm/LOCAL_CLUSTER.md (and the team's shared notes on the local cluster).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin        # the daemons live in /usr/sbin

DIR=${LAUNCHER_SLURM_DIR:-/var/tmp/launcher-slurm}
WAIT_S=${LAUNCHER_SLURM_WAIT:-60}       # bound for each wait below
CLUSTER=launcher
NODES=(n1 n2)
CTLD_PORT=16817
DBD_PORT=16819
NODE_PORTS=(16821 16822)
DB_PORT=16306

CONF=$DIR/etc/slurm.conf
DBD_CONF=$DIR/etc/slurmdbd.conf          # slurmdbd finds it next to $SLURM_CONF
DB_DIR=$DIR/mysql                        # owned by mysql: mariadbd dies silently otherwise
DB_SOCK=$DB_DIR/run/mysqld.sock
RUN=$DIR/run                             # pid files
LOG=$DIR/log

log() { echo "[local_cluster] $*"; }
die() { echo "[local_cluster] ERROR: $*" >&2; exit 1; }

# Print the last lines of a log file to stderr (used when a daemon fails to come up).
show_log() {
    if [[ -f $1 ]]; then
        echo "----- tail of $1 -----" >&2
        # Debian's slurm logs harmless pmix load errors at every start: leave them out.
        grep -vE 'pmix|MPI: Cannot create context' "$1" | tail -n 20 >&2 || true
        echo "-----" >&2
    else
        echo "(no log file $1)" >&2
    fi
}

# wait_for DAEMON LOGFILE PIDFILE CMD...: retry CMD every 0.2 s for up to $WAIT_S s. Fail (naming
# the daemon, with the tail of its log) on timeout, or as soon as the daemon has died (checked
# after a 3 s grace period, since a daemon writes its pid file only once it has forked).
wait_for() {
    local what=$1 logfile=$2 pidfile=$3; shift 3
    local t0=$SECONDS
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS - t0 >= 3)) && ! pid_alive "$pidfile"; then
            echo "[local_cluster] ERROR: $what exited during start-up" >&2
            show_log "$logfile"
            exit 1
        fi
        if ((SECONDS - t0 >= WAIT_S)); then
            echo "[local_cluster] ERROR: $what not ready after ${WAIT_S}s (check: $*)" >&2
            show_log "$logfile"
            exit 1
        fi
        sleep 0.2
    done
}

# alive PID: a running process. A zombie counts as gone: our daemons are reparented to PID 1,
# which may take seconds to reap them.
alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# pid_alive PIDFILE: the pid recorded there is a live process running the daemon the file is named
# after (so a stale file whose pid was reused by another program is not trusted).
pid_alive() {
    local pid want comm
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
    want=$(basename "$1" .pid)
    case $want in
        mariadb) want=mariadbd ;;
        slurmd-*) want=slurmd ;;
    esac
    comm=$(<"/proc/$pid/comm") 2>/dev/null || return 1
    [[ $comm == "$want" ]]
}

# ---------------------------------------------------------------------------------------------
# Installation
# ---------------------------------------------------------------------------------------------
install_packages() {
    local bins=(slurmctld slurmd slurmdbd srun sbatch sacct sacctmgr munged mariadbd mariadb-install-db)
    local missing=() b
    for b in "${bins[@]}"; do
        command -v "$b" >/dev/null 2>&1 || missing+=("$b")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing packages (missing: ${missing[*]})"
    # Keep the package scripts from starting the system's own munge/mariadb/slurm services: this
    # script starts private instances, and a stray system mariadb would outlive `stop`.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            slurmctld slurmd slurm-client munge slurmdbd mariadb-server
    } >"/tmp/local_cluster-apt.$$.log" 2>&1 || rc=$?
    if ((made_policy)); then rm -f "$policy"; fi
    if ((rc != 0)); then
        show_log "/tmp/local_cluster-apt.$$.log"
        die "apt-get install failed (rc=$rc)"
    fi
    rm -f "/tmp/local_cluster-apt.$$.log"
}

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
make_dirs() {
    mkdir -p "$DIR"/{etc,run,log,state} "$DIR"/spool/slurmd-{n1,n2}
    chmod 755 "$DIR"                     # mysql must be able to traverse it
    mkdir -p "$DB_DIR"/{data,run,log}
    chown -R mysql:mysql "$DB_DIR"
}

# The DB password is made once and kept (the DB user is created with it).
db_password() {
    local f=$DIR/etc/db.pass
    if [[ ! -s $f ]]; then
        (umask 077; head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$f")
    fi
    cat "$f"
}

write_slurm_conf() {
    local tmp=$CONF.tmp i
    cat >"$tmp" <<EOF
# Generated by slurm/local_cluster.sh; edits are overwritten on the next start.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job is eligible cred_expire+1 s after the requeue (default 120 s; 5 s here: the
# requeue tests wait about 11 s instead of 15 s).
AuthInfo=cred_expire=5
MailProg=/bin/true
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Nodes declare CPUs=4 on a smaller host; without this they are drained (low core count).
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
# Without it, scontrol requeue answers "Requested operation is presently disabled".
JobRequeue=1
KillWait=5
MinJobAge=600
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
Waittime=0
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd-%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
EOF
    # Debian's slurmd is built with MULTIPLE_SLURMD: each node is a `slurmd -N NAME` with its own port.
    for i in "${!NODES[@]}"; do
        echo "NodeName=${NODES[i]} NodeAddr=127.0.0.1 Port=${NODE_PORTS[i]} CPUs=4 State=UNKNOWN" >>"$tmp"
    done
    echo "PartitionName=debug Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP" >>"$tmp"
    mv "$tmp" "$CONF"
    # Clients (sbatch, srun, sacct, submitit) read /etc/slurm/slurm.conf when SLURM_CONF is unset.
    mkdir -p /etc/slurm
    cp "$CONF" /etc/slurm/slurm.conf
}

write_slurmdbd_conf() {
    local pass
    pass=$(db_password)
    (umask 077; cat >"$DBD_CONF.tmp" <<EOF
# Generated by slurm/local_cluster.sh
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
# 127.0.0.1, not localhost: "localhost" makes the client use the system socket path.
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$pass
StorageLoc=slurm_acct_db
EOF
    )
    # slurmdbd refuses a config that is not 0600 and owned by SlurmUser.
    chown root:root "$DBD_CONF.tmp"
    chmod 600 "$DBD_CONF.tmp"
    mv "$DBD_CONF.tmp" "$DBD_CONF"
}

# Node names must resolve (a MASTER_ADDR=n1 would otherwise hang for the connect timeout).
ensure_hosts() {
    local n ok=1
    for n in "${NODES[@]}"; do
        [[ $(getent ahostsv4 "$n" 2>/dev/null | awk 'NR==1{print $1}') == 127.0.0.1 ]] || ok=0
    done
    if ((ok == 0)); then
        log "adding '127.0.0.1 ${NODES[*]}' to /etc/hosts"
        echo "127.0.0.1 ${NODES[*]}" >>/etc/hosts
    fi
}

# ---------------------------------------------------------------------------------------------
# Daemons
# ---------------------------------------------------------------------------------------------
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if pid_alive "$RUN/munged.pid"; then return 0; fi
    if munge_ok; then
        log "munged: already running (not started by this script; left alone)"
        return 0
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "munged: creating /etc/munge/munge.key"
        mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
            || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    # No systemd here: make munged's runtime dir and start it as the munge user ourselves.
    mkdir -p /run/munge /var/lib/munge "$LOG/munge"
    chown munge:munge /run/munge /var/lib/munge "$LOG/munge"
    log "starting munged"
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid --log-file="$LOG/munge/munged.log" \
        || { show_log "$LOG/munge/munged.log"; die "munged failed to start"; }
    wait_for munged "$LOG/munge/munged.log" /run/munge/munged.pid munge_ok
    cp /run/munge/munged.pid "$RUN/munged.pid"
}

db() { mariadb --no-defaults --protocol=socket --socket="$DB_SOCK" -uroot "$@"; }

start_mariadb() {
    if pid_alive "$RUN/mariadb.pid"; then return 0; fi
    if [[ ! -d $DB_DIR/data/mysql ]]; then
        log "initialising MariaDB data dir"
        mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR/data" \
            --auth-root-authentication-method=socket --skip-test-db \
            >"$LOG/mariadb-install.log" 2>&1 \
            || { show_log "$LOG/mariadb-install.log"; die "mariadb-install-db failed"; }
    fi
    log "starting mariadb (127.0.0.1:$DB_PORT)"
    # --no-defaults: ignore /etc/mysql (system datadir/socket). mariadbd drops to user mysql itself.
    setsid mariadbd --no-defaults --user=mysql --datadir="$DB_DIR/data" --socket="$DB_SOCK" \
        --pid-file="$DB_DIR/run/mariadbd.pid" --port=$DB_PORT --bind-address=127.0.0.1 \
        --skip-name-resolve --log-error="$DB_DIR/log/error.log" \
        --innodb-buffer-pool-size=64M --innodb-log-file-size=16M \
        </dev/null >>"$LOG/mariadb.out" 2>&1 &
    echo $! >"$RUN/mariadb.pid"
    wait_for mariadb "$DB_DIR/log/error.log" "$RUN/mariadb.pid" db -e 'SELECT 1'
    # slurmdbd logs in over TCP as 'slurm' with the generated password.
    local pass
    pass=$(db_password)
    db -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
           ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
           GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" \
        || die "could not create the slurm database user"
}

sacctmgr_ok() { sacctmgr -n -P show cluster format=cluster >/dev/null; }

start_slurmdbd() {
    if pid_alive "$RUN/slurmdbd.pid"; then return 0; fi
    log "starting slurmdbd (:$DBD_PORT)"
    # slurmdbd has no -f: it reads slurmdbd.conf from the directory of $SLURM_CONF.
    SLURM_CONF=$CONF slurmdbd || { show_log "$LOG/slurmdbd.log"; die "slurmdbd failed to start"; }
    wait_for slurmdbd "$LOG/slurmdbd.log" "$RUN/slurmdbd.pid" sacctmgr_ok
}

# Register the cluster before slurmctld first talks to slurmdbd. Adding a cluster also creates its
# "root" account with user root in it, which is the default account of root's jobs; jobs of other
# users are recorded too (no AccountingStorageEnforce), with an empty account.
register_accounting() {
    if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
        log "registering cluster '$CLUSTER' in slurmdbd"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster $CLUSTER failed"
    fi
}

start_slurmctld() {
    STARTED_CTLD=0
    if pid_alive "$RUN/slurmctld.pid"; then return 0; fi
    log "starting slurmctld (:$CTLD_PORT)"
    slurmctld -f "$CONF" || { show_log "$LOG/slurmctld.log"; die "slurmctld failed to start"; }
    STARTED_CTLD=1
}

start_slurmds() {
    local n
    for n in "${NODES[@]}"; do
        pid_alive "$RUN/slurmd-$n.pid" && continue
        log "starting slurmd -N $n"
        slurmd -f "$CONF" -N "$n" || { show_log "$LOG/slurmd-$n.log"; die "slurmd $n failed to start"; }
    done
}

# After an unclean stop a restarted slurmctld still believes old jobs run: cancel them.
cancel_leftovers() {
    local ids
    ids=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
    if [[ -n ${ids// /} ]]; then
        log "cancelling leftover jobs: $ids"
        # shellcheck disable=SC2086
        scancel $ids 2>/dev/null || true
    fi
}

nodes_idle() {
    local n state
    for n in "${NODES[@]}"; do
        state=$(sinfo -h -N -n "$n" -o %T 2>/dev/null | head -n1)
        [[ $state == idle ]] || return 1
    done
}

# Nodes left drained/down by an earlier run are not brought back by ReturnToService: resume them.
resume_nodes() {
    local n state
    for n in "${NODES[@]}"; do
        state=$(sinfo -h -N -n "$n" -o %T 2>/dev/null | head -n1)
        case $state in
            drain*|down*|fail*) log "resuming node $n (was $state)"
                scontrol update NodeName="$n" State=RESUME 2>/dev/null || true ;;
        esac
    done
}

# Wait until both nodes are idle: registered with slurmctld, and done with cancelled leftovers.
wait_nodes_idle() {
    local t1=$SECONDS n gone dead=0
    until nodes_idle; do
        resume_nodes
        # Fail at once (after a grace period) when a slurmd has died, e.g. its port is taken.
        gone=0
        for n in "${NODES[@]}"; do pid_alive "$RUN/slurmd-$n.pid" || gone=1; done
        if ((SECONDS - t1 >= WAIT_S || (gone && SECONDS - t1 >= 3))); then
            echo "[local_cluster] ERROR: nodes not idle after $((SECONDS - t1))s:" >&2
            sinfo -N >&2 || true
            for n in "${NODES[@]}"; do
                if ! pid_alive "$RUN/slurmd-$n.pid"; then
                    echo "[local_cluster] ERROR: slurmd $n is not running" >&2
                    show_log "$LOG/slurmd-$n.log"
                    dead=1
                fi
            done
            ((dead)) || show_log "$LOG/slurmctld.log"
            exit 1
        fi
        sleep 0.3
    done
}

# End-to-end probe: a 2-node srun step, then its job record in sacct.
probe() {
    local name=launcher-probe-$$ id state deadline
    timeout "$WAIT_S" srun -J "$name" -N2 --ntasks-per-node=1 true \
        || { show_log "$LOG/slurmctld.log"; die "probe 'srun -N2 --ntasks-per-node=1 true' failed"; }
    deadline=$((SECONDS + WAIT_S))
    while :; do
        read -r id state < <(sacct -n -X -P -S now-1hours --name="$name" -o JobID,State \
            2>/dev/null | tail -n1 | tr '|' ' ') || true
        [[ ${state:-} == COMPLETED ]] && break
        if ((SECONDS >= deadline)); then
            echo "[local_cluster] ERROR: probe job not COMPLETED in sacct after ${WAIT_S}s" \
                "(saw '${id:-} ${state:-}')" >&2
            show_log "$LOG/slurmdbd.log"
            exit 1
        fi
        sleep 0.3
    done
    log "probe ok (job $id: srun on 2 nodes, COMPLETED in sacct)"
}

# Every daemon this script runs is up (by pid file).
all_running() {
    local d
    for d in munged mariadb slurmdbd slurmctld slurmd-n1 slurmd-n2; do
        pid_alive "$RUN/$d.pid" || return 1
    done
}

# Each node answers and is usable (it may be running jobs: "*" = not responding, drain = drained).
nodes_usable() {
    local n state
    for n in "${NODES[@]}"; do
        state=$(sinfo -h -N -n "$n" -o %t 2>/dev/null | head -n1)
        [[ $state =~ ^(idle|mix|alloc|comp)$ ]] || return 1
    done
}

cmd_start() {
    local t0=$SECONDS
    [[ $(id -u) == 0 ]] || die "must run as root"
    # Already up: leave it alone. No idle wait or probe here, since jobs of a running test suite may
    # occupy the nodes.
    if all_running && timeout 10 scontrol ping >/dev/null 2>&1 && nodes_usable; then
        log "already up (nodes ${NODES[*]}, partition debug; logs in $LOG)"
        return 0
    fi
    install_packages
    make_dirs
    write_slurm_conf
    write_slurmdbd_conf
    ensure_hosts
    start_munge
    start_mariadb
    start_slurmdbd
    register_accounting
    start_slurmctld
    start_slurmds
    wait_for slurmctld "$LOG/slurmctld.log" "$RUN/slurmctld.pid" scontrol ping
    if ((STARTED_CTLD)); then cancel_leftovers; fi
    wait_nodes_idle
    probe
    log "up in $((SECONDS - t0))s: nodes ${NODES[*]}, partition debug; logs in $LOG"
}

# ---------------------------------------------------------------------------------------------
# Stop
# ---------------------------------------------------------------------------------------------

# descendants PID...: the pids of all their children, grandchildren, ...
descendants() {
    local p kids
    for p in "$@"; do
        kids=$(ps -o pid= --ppid "$p" 2>/dev/null | tr -d ' ' | tr '\n' ' ')
        [[ -n ${kids// /} ]] || continue
        # shellcheck disable=SC2086
        echo $kids
        # shellcheck disable=SC2086
        descendants $kids
    done
}

# any_exists PID...: one of them still has a /proc entry (zombies included).
any_exists() {
    local p
    for p in "$@"; do [[ -e /proc/$p ]] && return 0; done
    return 1
}

# stop_pidfile NAME PIDFILE: SIGTERM, wait (bounded), then SIGKILL.
stop_pidfile() {
    local name=$1 f=$2 pid i
    if pid_alive "$f"; then
        pid=$(<"$f")
        STOPPED+=("$pid")
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
        if alive "$pid"; then
            log "$name did not exit on SIGTERM within 10s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
        fi
    fi
    rm -f "$f"
}

# Let slurmstepd kill the job tasks itself (clean), bounded; leftovers are killed below.
cancel_all_jobs() {
    pid_alive "$RUN/slurmctld.pid" || return 0
    local ids i
    ids=$(timeout 5 squeue -h -o %A 2>/dev/null | tr '\n' ' ') || return 0
    [[ -n ${ids// /} ]] || return 0
    log "cancelling jobs: $ids"
    # shellcheck disable=SC2086
    timeout 5 scancel $ids 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
        [[ -z $(timeout 5 squeue -h -t running,completing -o %A 2>/dev/null) ]] && break
        sleep 0.25
    done
}

# uses_dir PID: the process's cwd or one of its open files is under $DIR.
uses_dir() {
    local f
    for f in "/proc/$1/cwd" "/proc/$1"/fd/*; do
        [[ $(readlink "$f" 2>/dev/null) == "$DIR"/* ]] && return 0
    done
    return 1
}

# slurmstepd outlives a stopped slurmd (by design); kill those started under our slurmds, and the
# job tasks under them.
kill_stepds() {
    local pids=() p
    for p in $(pgrep -x slurmstepd 2>/dev/null || true); do
        # Only step daemons of this cluster: they inherit slurmd's cwd ($LOG) and its log file.
        if uses_dir "$p"; then pids+=("$p"); fi
    done
    ((${#pids[@]})) || return 0
    local -a all
    # shellcheck disable=SC2207
    all=("${pids[@]}" $(descendants "${pids[@]}"))
    log "killing leftover slurmstepd and their tasks: ${all[*]}"
    kill -KILL "${all[@]}" 2>/dev/null || true
}

cmd_stop() {
    local n i
    STOPPED=()
    cancel_all_jobs
    for n in "${NODES[@]}"; do stop_pidfile "slurmd $n" "$RUN/slurmd-$n.pid"; done
    kill_stepds
    stop_pidfile slurmctld "$RUN/slurmctld.pid"
    stop_pidfile slurmdbd "$RUN/slurmdbd.pid"
    stop_pidfile mariadb "$RUN/mariadb.pid"
    stop_pidfile munged "$RUN/munged.pid"
    # They have exited; give PID 1 a moment to reap them so that ps/pgrep show nothing (bounded:
    # a PID 1 that never reaps leaves harmless zombies).
    for ((i = 0; i < 50; i++)); do
        any_exists "${STOPPED[@]}" || break
        sleep 0.1
    done
    log "stopped"
}

# ---------------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------------
cmd_status() {
    local up=1 d f
    for d in munged mariadb slurmdbd slurmctld slurmd-n1 slurmd-n2; do
        f=$RUN/$d.pid
        if pid_alive "$f"; then
            echo "$d: running (pid $(<"$f"))"
        else
            echo "$d: stopped"
            up=0
        fi
    done
    if ((up)) && timeout 10 scontrol ping >/dev/null 2>&1; then
        timeout 10 sinfo -N 2>/dev/null || true
        echo "local slurm cluster: up"
        return 0
    fi
    echo "local slurm cluster: down"
    return 1
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

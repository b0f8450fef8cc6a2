#!/bin/sh
# A real single-node Slurm for the tests: munged, slurmctld and slurmd on loopback, all state
# (key, sockets, spool, logs, slurm.conf) in one folder, so nothing under /etc is touched and
# two copies can run side by side.
#
#   tests/cluster/slurm_up.sh start DIR   configure and start; prints SLURM_CONF=DIR/slurm.conf
#   tests/cluster/slurm_up.sh stop DIR    stop the daemons started in DIR, by their PIDs
#
# Run as root, with Debian's slurm-wlm and munge installed (`apt-get install slurm-wlm munge`).
# Clients find the cluster through SLURM_CONF; slurm.conf names the private munge socket.
# No cgroups are needed: processes are tracked through /proc (proctrack/linuxproc), tasks are
# not confined (task/none), and nothing is accounted.
set -eu

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
action=$1
dir=$2

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop() {
    # Every daemon's PID is in DIR/NAME.pid: all are asked to stop at once, and any still there
    # after half a second is killed (each takes a second or two to save its state, which the
    # tests throw away with the folder).
    pids=""
    for name in slurmd slurmctld munged; do
        pidfile="$dir/$name.pid"
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        rm -f "$pidfile"
        if [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; then
            pids="$pids $pid"
        fi
    done
    i=0
    for pid in $pids; do
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 5 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
}

wait_for() {
    # wait_for SECONDS WHAT COMMAND...: run COMMAND until it succeeds or time runs out.
    limit=$1
    what=$2
    shift 2
    i=0
    until "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -gt $((limit * 10)) ]; then
            echo "slurm_up: $what did not come up in ${limit}s; logs in $dir" >&2
            stop
            exit 1
        fi
        sleep 0.1
    done
}

node_idle() {
    [ "$(sinfo -h -N -o %T 2>/dev/null)" = "idle" ]
}

start() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "slurm_up: run as root (slurmd starts jobs as their user)" >&2
        exit 2
    fi
    for tool in munged mungekey slurmctld slurmd sbatch sinfo; do
        command -v "$tool" >/dev/null 2>&1 || {
            echo "slurm_up: $tool is missing; apt-get install -y slurm-wlm munge" >&2
            exit 2
        }
    done
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    chmod 0700 "$dir"
    mkdir -p "$dir/munge" "$dir/ctld" "$dir/spool"
    chmod 0700 "$dir/munge"
    [ -f "$dir/munge/munge.key" ] || mungekey --create --keyfile="$dir/munge/munge.key"
    chmod 0600 "$dir/munge/munge.key"

    munged --force --foreground \
        --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pidfile" --seed-file="$dir/munge/munged.seed" \
        --log-file="$dir/munged.log" </dev/null >>"$dir/munged.log" 2>&1 &
    echo $! >"$dir/munged.pid"
    wait_for 10 munged test -S "$dir/munge/munge.socket"

    host=$(hostname -s)
    cpus=$(nproc)
    cat >"$dir/slurm.conf" <<EOF
# Written by tests/cluster/slurm_up.sh: one node on loopback, for batchgen's tests.
ClusterName=batchgen-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pidfile
SlurmdPidFile=$dir/slurmd.pidfile
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$dir/slurm.conf"

    slurmctld -D -i -f "$SLURM_CONF" </dev/null >>"$dir/slurmctld.out" 2>&1 &
    echo $! >"$dir/slurmctld.pid"
    wait_for 30 slurmctld scontrol ping
    slurmd -D -f "$SLURM_CONF" </dev/null >>"$dir/slurmd.out" 2>&1 &
    echo $! >"$dir/slurmd.pid"
    wait_for 60 "the node" node_idle
    echo "SLURM_CONF=$SLURM_CONF"
}

case $action in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac

#!/usr/bin/env bash
# A single-node SLURM on localhost for the workflow's SLURM test: Debian's slurmctld, slurmd
# and munge, no systemd, no cgroups, no accounting. Everything it writes lives in one folder.
#
#   tests/localhost_slurm.sh install      install the Debian packages (root, apt-get)
#   tests/localhost_slurm.sh start DIR    write DIR/slurm.conf, start the daemons, wait for the node
#   tests/localhost_slurm.sh stop DIR     stop, by PID, what `start DIR` started
#
# Clients find the cluster through SLURM_CONF=DIR/slurm.conf, and /etc/slurm/slurm.conf links to
# it while it runs: the executor's job step drops SLURM_CONF before its nested srun. A machine
# that has its own /etc/slurm/slurm.conf is left alone (start fails).
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge)
SYSTEM_CONF=/etc/slurm/slurm.conf

missing() {
    for tool in slurmctld slurmd sbatch squeue munged; do
        command -v "$tool" >/dev/null || PATH="$PATH:/usr/sbin" command -v "$tool" >/dev/null || return 0
    done
    return 1
}

# Elsewhere a machine without SLURM skips its tests, saying why; in CI (CI=true) they must run,
# so a failed install fails the run.
cannot_install() {
    if [[ ${CI:-} == true ]]; then
        echo "localhost_slurm: $1; CI must run the SLURM tests" >&2
        return 1
    fi
    echo "localhost_slurm: $1; the SLURM tests will be skipped" >&2
}

install() {
    missing || return 0
    if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
        cannot_install "SLURM is not installed and this is not root with apt-get (apt-get install ${PACKAGES[*]})"
        return
    fi
    if ! { apt-get install -y --no-install-recommends "${PACKAGES[@]}" \
        || { apt-get update && apt-get install -y --no-install-recommends "${PACKAGES[@]}"; }; } >/dev/null 2>&1; then
        cannot_install "apt-get could not install ${PACKAGES[*]}"
    fi
}

start() {
    local dir=$1
    export PATH="$PATH:/usr/sbin"
    if missing; then
        echo "localhost_slurm: slurmctld, slurmd, sbatch, squeue or munged not found" \
            "(apt-get install ${PACKAGES[*]}, or run tests/localhost_slurm.sh install as root)" >&2
        return 3
    fi
    [[ $(id -u) == 0 ]] || { echo "localhost_slurm: slurmd must run as root" >&2; return 3; }
    if [[ -e $SYSTEM_CONF && ! -L $SYSTEM_CONF ]]; then
        echo "localhost_slurm: $SYSTEM_CONF exists: this machine has its own SLURM" >&2
        return 3
    fi
    mkdir -p "$dir"/{state,spool}
    dir=$(cd "$dir" && pwd)
    if ! munge -n >/dev/null 2>&1; then
        mkdir -p /run/munge && chown munge:munge /run/munge
        runuser -u munge -- /usr/sbin/munged
        cp /run/munge/munged.pid "$dir/munged.pid"
    fi
    local memory
    memory=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    cat >"$dir/slurm.conf" <<EOF
ClusterName=actloc-test
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
# squeue reports a finished job this long: the executor's status checks rely on it.
MinJobAge=600
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$((memory * 9 / 10))
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -sfn "$dir/slurm.conf" "$SYSTEM_CONF"
    export SLURM_CONF=$dir/slurm.conf
    slurmctld -i
    slurmd -N localhost
    for _ in $(seq 60); do
        [[ $(sinfo -h -o %T 2>/dev/null) == idle ]] && return 0
        sleep 0.5
    done
    echo "localhost_slurm: the node did not become idle in 30 s; see $dir/slurmctld.log, $dir/slurmd.log" >&2
    stop "$dir"
    return 1
}

stop() {
    local dir=$1 pidfile pid
    for pidfile in "$dir"/slurmd.pid "$dir"/slurmctld.pid "$dir"/munged.pid; do
        [[ -f $pidfile ]] || continue
        pid=$(<"$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$pidfile"
    done
    if [[ $(readlink "$SYSTEM_CONF" 2>/dev/null) == "$(cd "$dir" && pwd)/slurm.conf" ]]; then
        rm -f "$SYSTEM_CONF"
    fi
}

case ${1:-} in
    install) install ;;
    start) start "${2:?usage: $0 start DIR}" ;;
    stop) stop "${2:?usage: $0 stop DIR}" ;;
    *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac

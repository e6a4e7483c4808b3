#!/usr/bin/env bash
# A single-node Slurm on this machine (slurmctld and slurmd on localhost, munge for auth), for
# trying deploy/slurm/larnn-workers.sbatch without a cluster and for the test that submits it
# (tests/test_slurm.py). Needs root and Debian's slurm-wlm and munge packages. Idempotent: a
# running cluster is left as it is.
#
#   deploy/slurm/local-cluster.sh --listen-on-all-interfaces
#
# Slurm has no setting to bind its daemons to one address: slurmctld and slurmd listen on ports
# 6817 and 6818 of every interface (munge authenticates each request). Hence the flag: run it on a
# machine whose network you trust, or behind a firewall, as CI does.
set -euo pipefail
if [ "${1:-}" != "--listen-on-all-interfaces" ]; then
  echo "usage: $0 --listen-on-all-interfaces (slurmctld and slurmd listen on ports 6817-6818 of every interface)" >&2
  exit 2
fi
conf=/etc/slurm/slurm.conf
if ! [ -f "$conf" ]; then
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  cpus=$(nproc)
  memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  cat > "$conf" <<CONF
ClusterName=larnn-local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=30
MpiDefault=none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
fi
[ -s /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1k count=1 2>/dev/null; }
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge
pgrep -x munged >/dev/null || runuser -u munge -- munged
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do  # the node registers within seconds
  if sinfo --noheader --states=idle,mixed,allocated --format=%N 2>/dev/null | grep -q localhost; then
    exit 0
  fi
  sleep 1
done
echo "slurm did not come up: see /var/log/slurm/" >&2
exit 1

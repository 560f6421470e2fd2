#!/usr/bin/env bash
# A real single-node Slurm cluster on localhost with two fake GPUs (touched files declared as gres).
# Usage: ci/slurm-up.sh up|down   (root, Debian). Idempotent; says what it does.
# Settings follow shared/reference/scale-out.md (verified with Debian slurm-wlm 22.05).
set -euo pipefail
ACTION=${1:-up}
DIR=${LORAFORGE_SLURM_DIR:-/var/lib/loraforge-slurm}
CONF=$DIR/slurm.conf
say() { echo "slurm-up: $*"; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    say "slurm-wlm and munge already installed"; return
  fi
  say "installing slurm-wlm and munge (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

write_config() {
  mkdir -p "$DIR"/{spool,state,log}
  touch "$DIR"/fakegpu0 "$DIR"/fakegpu1
  local node
  node=$(slurmd -C | head -1 | sed 's/ UpTime.*//')
  cat >"$CONF" <<CONFEOF
ClusterName=loraforge
SlurmctldHost=$(hostname -s)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
DefMemPerCPU=1024
GresTypes=gpu
ReturnToService=2
MpiDefault=none
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
$node Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONFEOF
  echo "NodeName=$(hostname -s) Name=gpu File=$DIR/fakegpu[0-1]" >"$DIR/gres.conf"
  mkdir -p /etc/slurm
  ln -sf "$CONF" /etc/slurm/slurm.conf
  ln -sf "$DIR/gres.conf" /etc/slurm/gres.conf
  say "wrote $CONF and $DIR/gres.conf (linked from /etc/slurm)"
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
  install_packages
  write_config
  mkdir -p /run/munge && chown munge:munge /run/munge
  [ -f /etc/munge/munge.key ] || { mungekey -c 2>/dev/null || create-munge-key -f; chown munge:munge /etc/munge/munge.key; }
  if running /run/munge/munged.pid; then say "munged already running"; else runuser -u munge -- munged; say "started munged"; fi
  if running "$DIR/slurmctld.pid"; then say "slurmctld already running"; else slurmctld; say "started slurmctld"; fi
  if running "$DIR/slurmd.pid"; then say "slurmd already running"; else slurmd; say "started slurmd"; fi
  for _ in $(seq 1 30); do
    if sinfo -h -o %T 2>/dev/null | grep -qx idle; then say "node idle: $(sinfo -h -o '%N %G %T')"; return; fi
    sleep 1
  done
  say "node did not become idle; see $DIR/log"; sinfo || true; exit 1
}

down() {
  for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" /run/munge/munged.pid; do
    if running "$pidfile"; then kill "$(cat "$pidfile")"; say "stopped $(basename "$pidfile" .pid)"; fi
  done
}

case "$ACTION" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac

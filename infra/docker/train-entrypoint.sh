#!/usr/bin/env bash
# Entry point of the training image (see train.Dockerfile).
#   head: sshd for the other nodes' ranks + the Prefect process worker of $LLMOPS_WORK_POOL
#   node: sshd only (DeepSpeed's launcher on the head starts the ranks here over pdsh/ssh)
#   anything else: run it
set -euo pipefail

start_sshd() {
  # An unprivileged sshd on $LLMOPS_SSH_PORT that admits the cluster key (mounted read-only
  # at /opt/llmops/ssh by the node's user data) for this user only.
  local dir="$HOME/.sshd"
  mkdir -p "$dir" "$HOME/.ssh"
  [ -f "$dir/host_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -f "$dir/host_ed25519"
  cp /opt/llmops/ssh/id_ed25519 "$HOME/.ssh/id_ed25519" && chmod 600 "$HOME/.ssh/id_ed25519"
  cp /opt/llmops/ssh/authorized_keys "$HOME/.ssh/authorized_keys"
  printf 'Host *\n  Port %s\n  StrictHostKeyChecking accept-new\n' "$LLMOPS_SSH_PORT" \
    > "$HOME/.ssh/config"
  /usr/sbin/sshd -f /dev/null -h "$dir/host_ed25519" -p "$LLMOPS_SSH_PORT" \
    -o PidFile="$dir/sshd.pid" -o PasswordAuthentication=no \
    -o AuthorizedKeysFile="$HOME/.ssh/authorized_keys" -o SetEnv=PATH="$PATH" "$@"
}

case "${1:-node}" in
  head)
    start_sshd
    # The rendered launch files (hostfile, .deepspeed_env) come from
    # `llmops launch render --from-terraform`; the pretrain stage writes its own at run time.
    exec prefect worker start --pool "${LLMOPS_WORK_POOL:-gpu}" --type process
    ;;
  node)
    start_sshd -D
    ;;
  *)
    exec "$@"
    ;;
esac

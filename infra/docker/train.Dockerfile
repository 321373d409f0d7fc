# Training image: CUDA, EFA (libfabric + the aws-ofi-nccl plugin), torch, DeepSpeed with its
# CUDA ops compiled at build time (not JIT on 16 ranks at start), pdsh/ssh for DeepSpeed's
# multi-node launcher, and this project. Build from the repository root:
#   docker build -f infra/docker/train.Dockerfile -t llmops-train:0.1.0 .
# Modes (infra/docker/train-entrypoint.sh): `head` (sshd + Prefect worker of the gpu pool),
# `node` (sshd only), anything else runs as a command.
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04

ARG EFA_INSTALLER_VERSION=1.43.1
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG DEEPSPEED_VERSION=0.19.8
# H100 (9.0) and A100 (8.0); add 8.9 for L40S/g6e.
ARG TORCH_CUDA_ARCH_LIST="8.0 9.0"

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:/opt/amazon/efa/bin:$PATH \
    LD_LIBRARY_PATH=/opt/amazon/ofi-nccl/lib/x86_64-linux-gnu:/opt/amazon/efa/lib:$LD_LIBRARY_PATH

# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3.11 python3.11-venv python3.11-dev git curl ca-certificates \
      openssh-server openssh-client pdsh libaio-dev build-essential ninja-build \
 && rm -rf /var/lib/apt/lists/*

# EFA user-space (libfabric, aws-ofi-nccl); the kernel module comes with the host AMI.
WORKDIR /tmp/efa
RUN curl -fsSL "https://efa-installer.amazonaws.com/aws-efa-installer-${EFA_INSTALLER_VERSION}.tar.gz" \
      | tar xz \
 && cd aws-efa-installer \
 && ./efa_installer.sh -y --skip-kmod --skip-limit-conf --no-verify \
 && rm -rf /tmp/efa /var/lib/apt/lists/*

RUN python3.11 -m venv /opt/venv \
 && pip install --upgrade pip \
 && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

# Ops DeepSpeed would otherwise JIT-compile on every rank at the first step.
ENV TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}
RUN DS_BUILD_CPU_ADAM=1 DS_BUILD_FUSED_ADAM=1 DS_BUILD_FUSED_LAMB=1 DS_BUILD_UTILS=1 \
    DS_BUILD_AIO=1 DS_BUILD_TRANSFORMER=1 \
    pip install --no-build-isolation "deepspeed==${DEEPSPEED_VERSION}" \
 && ds_report

# The project: dependencies first (cached while only code changes), then the code.
RUN useradd --create-home --uid 1000 llmops
WORKDIR /workspace/llmops
COPY pyproject.toml README.md ./
COPY components ./components
COPY flows ./flows
RUN pip install -e . "dvc-s3>=3.2,<4" "boto3>=1.34" \
 && chown -R llmops:llmops /workspace/llmops
COPY --chown=llmops:llmops dvc.yaml params.yaml prefect.yaml ./
COPY --chown=llmops:llmops .dvc/config ./.dvc/config
COPY --chown=llmops:llmops infra/docker/train-entrypoint.sh /usr/local/bin/train-entrypoint.sh

USER llmops
# sshd of the cluster (DeepSpeed's pdsh) listens on this port, not the host's 22.
# DS_ENV_FILE: DeepSpeed's launcher exports the lines of the rendered .deepspeed_env (NCCL, EFA)
# on every node once `llmops launch render --out launch/` has run here; absent, it is skipped.
# LLMOPS_PROJECT_DIR: prefect.yaml's pull step changes to it.
ENV LLMOPS_SSH_PORT=2222 \
    DS_ENV_FILE=/workspace/llmops/launch/.deepspeed_env \
    LLMOPS_PROJECT_DIR=/workspace/llmops
EXPOSE 2222
HEALTHCHECK --interval=60s --timeout=10s --start-period=60s \
  CMD python -c "import torch, deepspeed; assert torch.cuda.is_available()" || exit 1
ENTRYPOINT ["/usr/local/bin/train-entrypoint.sh"]
CMD ["node"]

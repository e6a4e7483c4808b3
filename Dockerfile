# A GPU worker image: CUDA PyTorch, the project, and the offline HAR data package.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir -e ".[dev]"
ENV LARNN_DATA=/data PYTHONUNBUFFERED=1
ENTRYPOINT ["larnn"]
CMD ["--help"]

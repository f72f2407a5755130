# `serve http` in a container: the serving extras only (onnxruntime, FastAPI, uvicorn; no torch), run
# by a user who is not root, serving the model repository mounted at /models.
#
#   pipeline export --run runs/default --repository models        # models/digits/1/model.onnx, ...
#   docker build -t foldserve .
#   docker run --rm -p 127.0.0.1:8000:8000 -v "$PWD/models:/models:ro" -e FOLDSERVE_API_KEY=... foldserve
#
# Add --build-arg EXTRAS=http,heif for iPhone photos (HEIC) on /predict.
FROM python:3.11-slim

ARG EXTRAS=http
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# Only the serve package goes in (with the files its build reads); constraints.txt pins what `make
# install` resolves to. The pipeline command in the image has no package behind it: train elsewhere.
COPY pyproject.toml README.md constraints.txt /tmp/foldserve/
COPY serve /tmp/foldserve/serve
RUN pip install -c /tmp/foldserve/constraints.txt "/tmp/foldserve[${EXTRAS}]" && rm -rf /tmp/foldserve

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin foldserve
# numeric, so that Kubernetes' runAsNonRoot can verify it
USER 10001:10001
WORKDIR /models

EXPOSE 8000
# health is answered without the API key; the slim image has no curl, Python fetches it
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4)"]
# 0.0.0.0 inside the container only: `serve http` itself binds to loopback unless told, and which
# host port reaches this one is for `docker run -p` (or the cluster) to decide.
CMD ["serve", "http", "--repository", "/models", "--host", "0.0.0.0", "--port", "8000"]

# The rnnstream server. Build and run it with docker-compose (see README.md).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kernels kernels
COPY service service
COPY protos protos
COPY clients clients
RUN pip install .

# Numba compiles the kernels once and caches them here.
ENV NUMBA_CACHE_DIR=/var/cache/numba \
    RNNSTREAM_HOST=0.0.0.0 \
    RNNSTREAM_PORT=50051 \
    RNNSTREAM_METRICS_PORT=9464 \
    RNNSTREAM_DATA_DIR=/data
VOLUME /data
EXPOSE 50051 9464
WORKDIR /data

HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["rnnstream", "health", "--address", "127.0.0.1:50051", "--timeout", "4"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["rnnstream", "serve"]

# The rnnstream server. Build and run it with docker-compose (see README.md).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kernels kernels
COPY service service
COPY protos protos
COPY clients clients
RUN pip install '.[postgres]'

# Numba's cache of the compiled kernels lives in the image (not on a volume, which would
# outlive a rebuild): the kernels are compiled here, once, so a new container loads them in
# about a second instead of compiling them for minutes. Run from /data, not /src, so that the
# installed packages (the ones the server imports) are the ones compiled.
ENV NUMBA_CACHE_DIR=/var/cache/numba \
    RNNSTREAM_HOST=0.0.0.0 \
    RNNSTREAM_PORT=50051 \
    RNNSTREAM_METRICS_PORT=9464 \
    RNNSTREAM_HEALTH_PORT=50052 \
    RNNSTREAM_DATA_DIR=/data
WORKDIR /data
RUN python -c "from rnnstream.service.engine import warm_up; warm_up()"
VOLUME /data
EXPOSE 50051 50052 9464

# Healthy from the first SERVING answer on the health port (answered off the event loop, so a
# probe does not queue behind thousands of new calls): seconds with the compiled kernels; when numba must
# recompile (the host's CPU differs from the build machine's) the server still serves within
# about 20 s, interpreted until the compile is done (README, "The first start").
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["rnnstream", "health", "--address", "127.0.0.1:50052", "--timeout", "4"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["rnnstream", "serve"]

# driftline: the engine and its CLI (`driftline run`, `driftline simulate`, `driftline triggers …`).
#   docker build -t driftline .
#   docker run --rm driftline --help
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
# confluent-kafka, numpy, scipy, msgspec ship manylinux wheels: no compiler needed.
# driftline[all]: every command (run with either engine, simulate, backtest with its report).
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY detectors ./detectors
COPY retrain_trigger ./retrain_trigger
RUN python -m pip install --no-cache-dir --upgrade pip \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels '.[all]'

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="driftline" \
      org.opencontainers.image.description="Streaming ML monitoring on Kafka: accuracy, drift, Prometheus metrics, retrain triggers" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links /wheels 'driftline[all]' && rm -rf /wheels \
 && useradd --system --uid 10001 --no-create-home driftline
COPY driftline.example.toml /etc/driftline/driftline.example.toml
USER driftline
ENV PYTHONUNBUFFERED=1
# /metrics (set metrics.address = "0.0.0.0:9464" in the config, or pass --metrics-address)
EXPOSE 9464
# healthy once /metrics answers and the engine is consuming (driftline_engine_up 1)
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD python -c "import sys, urllib.request; body = urllib.request.urlopen('http://127.0.0.1:9464/metrics', timeout=2).read().decode(); sys.exit(0 if 'driftline_engine_up 1.0' in body else 1)"
ENTRYPOINT ["driftline"]
CMD ["run", "--config", "/etc/driftline/driftline.toml"]

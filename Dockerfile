# Serena application image: the same code `make demo` runs natively.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm mosquitto-clients build-essential \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY serena serena
COPY routing routing
COPY geofence geofence
COPY tracking tracking
COPY dispatch dispatch
COPY commerce commerce
COPY notifications notifications
COPY simulator simulator
COPY load load
COPY migrations migrations
RUN pip install --no-cache-dir -e . \
 && cd serena/web && npm ci --no-audit --no-fund --loglevel=error

ENV SERENA_API_HOST=0.0.0.0
EXPOSE 8000
CMD ["serena", "up"]

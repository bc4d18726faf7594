# Paperboy: one image for every process (web, scheduler, worker, migrate); the command picks.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv/paperboy/src
COPY requirements.lock ./
# Exact versions from the lock file; nothing resolved at build time.
RUN python -m venv /opt/paperboy \
 && /opt/paperboy/bin/pip install --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
COPY templates ./templates
# Editable, so the templates and migrations next to the package are found where they are.
RUN /opt/paperboy/bin/pip install --no-deps -e .

FROM python:3.11-slim-bookworm
ENV PATH=/opt/paperboy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PAPERBOY_LOG_FORMAT=json
RUN useradd --system --uid 10001 --home-dir /srv/paperboy --create-home paperboy
# Models fetched by Hugging Face id; a named volume mounted here inherits the owner.
RUN install -d -o paperboy -g paperboy /srv/paperboy/models
COPY --from=build /opt/paperboy /opt/paperboy
COPY --from=build /srv/paperboy/src /srv/paperboy/src
WORKDIR /srv/paperboy
USER paperboy
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["paperboy", "web", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]

# The training image: `kedro run` in a container (the serving image is the Bento's, `make bento`).
#   docker build -t ai-image-detection-train .
# Run it on a checkout, as yourself, so that data/, mlflow.db and mlruns/ land there, owned by you:
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD:/project" -w /project ai-image-detection-train
# or against the shared MLflow server: add -e KEDRO_ENV=production -e MLFLOW_TRACKING_URI=https://...
# Data, the MLflow store and credentials come in at run time (volumes, environment); none is baked in.
# Without a mount it runs in /app (its own conf/, data/), as the unprivileged user below.

# ---- build: the locked environment, without the dev, serving and ops groups ----
FROM python:3.11.13-slim-bookworm AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN pip install --no-cache-dir "uv==0.13.9"
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-default-groups --no-install-project
COPY src ./src
RUN uv sync --locked --no-default-groups --no-editable

# ---- run: the environment and the project's configuration, as an unprivileged user ----
FROM python:3.11.13-slim-bookworm
ENV PATH="/app/.venv/bin:$PATH" \
    KEDRO_DISABLE_TELEMETRY=1 \
    KEDRO_LOGGING_CONFIG=conf/base/logging.yml \
    DVC_NO_ANALYTICS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
RUN groupadd --system --gid 10001 trainer \
    && useradd --system --uid 10001 --gid trainer --home-dir /app --shell /usr/sbin/nologin trainer
WORKDIR /app
COPY --from=build --chown=trainer:trainer /app/.venv ./.venv
COPY --chown=trainer:trainer pyproject.toml ./
COPY --chown=trainer:trainer conf/base ./conf/base
COPY --chown=trainer:trainer conf/production ./conf/production
# The package itself is installed in the venv; Kedro only needs the source folder to exist. /app is
# the user's: SQLite writes its journal next to mlflow.db, MLflow its artifacts to mlruns/.
RUN mkdir -p conf/local data src && chown trainer:trainer /app conf/local data
USER 10001:10001
ENTRYPOINT ["kedro", "run"]

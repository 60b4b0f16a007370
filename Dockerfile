# The token-refresh service image: one image, one entry point (`token-refresh`), the command
# chooses the role: `worker` (default), `migrate`, `sandbox`, `keygen`, `refresh`, `replay`.
#
#   docker build -t token-refresh .
#   docker run --rm token-refresh keygen
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home \
       --shell /usr/sbin/nologin app \
    && install -d -o app -g app -m 0700 /var/lib/token-refresh/spool

# Only what the wheel needs: the packages listed in pyproject's [tool.setuptools.packages.find].
# `README.m[d]`: pyproject names README.md as the long description; the pattern copies it when
# it exists and does not fail the build when it does not (pyproject.toml always matches).
WORKDIR /tmp/build
COPY pyproject.toml constraints.txt README.m[d] ./
COPY stream_app ./stream_app
COPY schemas ./schemas
COPY agents ./agents
# The exact versions CI tested (constraints.txt), not whatever is newest on the day of the build.
RUN pip install --constraint constraints.txt . \
    && cd / && rm -rf /tmp/build

# A writable working directory of the unprivileged user: Faust keeps its data directory
# (`<app id>-data`) in the current directory, and an optional `.env` is read from here.
WORKDIR /home/app
USER 10001:10001

ENTRYPOINT ["token-refresh"]
CMD ["worker"]

# One image for every central service: `potluck registry`, `potluck allocator`, ...
FROM python:3.11-slim-bookworm
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY potluck ./potluck
COPY libs ./libs
COPY services ./services
RUN uv sync --frozen --no-dev && useradd --system potluck
ENV PATH=/app/.venv/bin:$PATH
USER potluck
ENTRYPOINT []
CMD ["potluck", "--help"]

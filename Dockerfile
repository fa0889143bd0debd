# rayapp image for KubeRay (kuberay/*.yaml): the official Ray image for the pinned Ray and Python,
# plus CPU-only torch and this package. Build: docker build -t rayapp:0.1.0 .
FROM rayproject/ray:2.60.0-py311-cpu

WORKDIR /home/ray/rayapp
# CPU wheel of torch first, so sentence-transformers does not pull a CUDA build.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users rayapp ./rayapp
COPY --chown=ray:users jobs ./jobs
COPY --chown=ray:users serve ./serve
RUN pip install --no-cache-dir -e .

# Jobs run as `python -m jobs.<name>` from here; models load offline from installed packages.
ENV PYTHONPATH=/home/ray/rayapp \
    HF_HUB_OFFLINE=1 \
    RAYAPP_DATA_DIR=/data \
    RAYAPP_LOG_FORMAT=json

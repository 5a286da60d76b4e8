# Terapan production image: the web app (gunicorn) and a CPU worker.
# GPU workers use the `gpu` target (CUDA base, CuPy, TensorFlow with CUDA).
FROM python:3.11-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=webapp.settings DEBUG=0 MEDIA_ROOT=/data/media TF_CPP_MIN_LOG_LEVEL=2
RUN apt-get update && apt-get install -y --no-install-recommends libglib2.0-0 libgl1 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
RUN SECRET_KEY=build-only REDIS_URL=redis://unused:6379/0 python manage.py collectstatic --noinput
RUN useradd --create-home --uid 1000 terapan && mkdir -p /data/media && chown -R terapan /data
USER terapan
EXPOSE 8000
# Threaded workers and timeouts: see gunicorn.conf.py.
CMD ["gunicorn", "webapp.wsgi", "-c", "gunicorn.conf.py"]

FROM base AS worker
CMD ["python", "manage.py", "rqworker", "gpu", "default", "--with-scheduler"]

FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 AS gpu
# TERAPAN_THREADS=auto: a GPU box's decode, alignment and flow (CPU stages) use
# every core; measured on an H100 host with 16 cores, 2 threads left them 2-3x slower.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=webapp.settings DEBUG=0 MEDIA_ROOT=/data/media TF_CPP_MIN_LOG_LEVEL=2 \
    TERAPAN_DEVICE=auto TERAPAN_THREADS=auto KERAS_BACKEND=tensorflow
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3-pip libglib2.0-0 libgl1 \
    && rm -rf /var/lib/apt/lists/* && python3.11 -m venv /venv
ENV PATH=/venv/bin:$PATH
WORKDIR /app
COPY requirements.txt requirements-gpu.txt ./
RUN pip install -r requirements.txt -r requirements-gpu.txt
COPY . .
RUN useradd --create-home --uid 1000 terapan && mkdir -p /data/media && chown -R terapan /data
USER terapan
# One warm process: jobs run in the worker itself (TerapanGPUWorker, see docs/gpu.md).
CMD ["python", "manage.py", "rqworker", "gpu", "--worker-class", "webapp.panoramas.worker.TerapanGPUWorker", "--with-scheduler"]

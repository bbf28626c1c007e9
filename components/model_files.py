"""The model artifact's two files, by name (components/model_artifact.py writes and loads them).

Apart from model_artifact, which imports torch (2 s or more): the steps that read a model's metadata or move its
files without loading it (register, promote, champion) need only these names.
"""

WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "model.json"

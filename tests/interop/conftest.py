"""Setup of the interop tests: Keras' backend, and the frameworks they need."""

import os

# Keras reads its backend once, at its first import.
os.environ.setdefault("KERAS_BACKEND", "jax")

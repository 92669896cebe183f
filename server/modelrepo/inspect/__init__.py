"""What is inside model files: safetensors and GGUF metadata, and the globals pickles import.

Everything here reads through bounded, seekable readers (``reader.py``): a header, a zip's central
directory and its pickle members, never the tensor data. Nothing here ever unpickles anything.
"""

"""The Xet storage protocol: the CAS the Hugging Face client (hf_xet) uploads to and downloads
from, backed by the same object store and catalog as Git LFS."""

"""The Hugging Face Hub-compatible surface: reads and repository management (service) and NDJSON
commits judged by the push rule book (commits)."""

"""Git LFS: the pointer codec, batch planning and verified transfers with per-repository links
(service), signed action tokens, and locks. Bytes themselves live behind storage/."""

"""Bulk work on Ray Data: scans of stored files and retro-matching of stored hashes.

``appliance bulk scan SOURCE --lists SPEC... --out DIR`` hashes and matches
every file of a directory tree, a text file of paths, or an object-store
prefix (``s3://``, ``gs://``, ... through pyarrow's filesystems) and writes
one Parquet row per file. ``appliance bulk rematch HASHES --lists SPEC...
--out DIR [--only-new-since SNAPSHOT]`` matches a host's stored hash records
against the lists, or only against the entries added since an older
snapshot, and writes one Parquet row per hit.

Both run a Ray Data pipeline whose workers are stateful actors (``scan``'s
``ScanWorker``, ``rematch``'s ``RematchWorker``): each builds, once, the
pipeline and list snapshot the server would (``backend.make_pipeline``,
``loading.load_snapshot``), on a GPU of its own when the backend is GPU.
Only paths, hash records and results pass through Ray: each actor reads
its files itself, so no file content ever enters Ray's object store or its
spill directory. The driver streams the results into Parquet as they come
(``output``), with a progress bar.

Heavy modules (Ray, pyarrow) are imported here, never by the server.
"""

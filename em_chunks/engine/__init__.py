"""The Dask glue: cluster connection, per-chunk stages with resume, run records. Kernels live in ops."""

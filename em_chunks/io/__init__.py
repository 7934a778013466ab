"""Reading and writing volumes: PyTC tile grids (``TileSet``), TIFF stacks and zarr, all as lazy dask arrays.

Modules: ``tileset`` (the tile JSON model and reader), ``tiles`` (decoding one PNG), ``padding`` (boundary
modes with dask.array.overlap semantics), ``volume`` (``open_volume``, ``voxel_size_of``), ``tileset_make``
(writing tile grids). Imported lazily: ``import em_chunks.io`` loads none of them.
"""

"""FAISS indexes, the SQL catalog, resumable jobs and the search service.

`indexer` handles ids and float32 arrays; it knows an encoder only as a callable
`list[str | image] -> np.ndarray` (see `indexer.encoder.Encoder`) and never imports a torch model.
"""

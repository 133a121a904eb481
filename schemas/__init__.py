"""pandera models of every table the pipeline reads or writes, and the pyarrow schemas of its Parquet files."""

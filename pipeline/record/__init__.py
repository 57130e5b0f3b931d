"""What a study records: MLflow runs and the tracking store's outages (tracking), the Parquet
tables (tables), the driver's recorder (recorder) and its Tune callback (callback, the only
module here that imports Ray)."""
